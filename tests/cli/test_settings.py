"""
Where orchestrator-ctl finds the admin URL and token: flags, environment, a settings
file, in that order; the file's parser checked with hypothesis.
"""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.cli.settings import (
    DEFAULT_FILE,
    DEFAULT_URL,
    KEYS,
    Settings,
    SettingsError,
    check_url,
    parse_settings_file,
    resolve,
)

_value = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                 max_size=30).map(str.strip).filter(
    lambda v: not (len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'"))


def files(contents: dict[str, str]):
    def read(path):
        try:
            return contents[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory") from None
    return read


class ParseTests(SynchronousTestCase):
    @given(st.dictionaries(st.sampled_from(KEYS), _value), st.lists(st.sampled_from(
        ["", "# a comment", "   ", "\t# indented comment"]), max_size=3))
    def test_what_is_written_is_read_back(self, settings, noise):
        lines = [*noise, *(f"{key} = {value}" for key, value in settings.items())]
        self.assertEqual(parse_settings_file("\n".join(lines), "ctl.conf"), settings)

    @given(st.text(max_size=200))
    def test_any_text_is_settings_or_a_settings_error(self, text):
        try:
            parsed = parse_settings_file(text, "ctl.conf")
        except SettingsError as error:
            self.assertTrue(str(error).startswith("ctl.conf: line "))
        else:
            self.assertLessEqual(set(parsed), set(KEYS))

    def test_quotes_are_taken_off(self):
        self.assertEqual(parse_settings_file('token = "a b"', "f"), {"token": "a b"})

    def test_an_unknown_key_suggests_the_close_one(self):
        with self.assertRaises(SettingsError) as raised:
            parse_settings_file("# settings\nurll = http://x", "ctl.conf")
        self.assertEqual(str(raised.exception),
                         'ctl.conf: line 2: unknown key \'urll\', did you mean "url"?')

    def test_a_key_twice_is_an_error(self):
        self.assertRaises(SettingsError, parse_settings_file, "url = a\nurl = b", "f")

    def test_urls(self):
        self.assertEqual(check_url("http://127.0.0.1:9090/", "x"), "http://127.0.0.1:9090")
        self.assertEqual(check_url("https://[::1]:9", "x"), "https://[::1]:9")
        for bad in ("127.0.0.1:9090", "ftp://h", "http://h/api", "http://h:99999", "http://"):
            self.assertRaises(SettingsError, check_url, bad, "x")


class ResolveTests(SynchronousTestCase):
    def test_defaults_without_anything(self):
        self.assertEqual(resolve(environ={}, read=files({})), Settings(DEFAULT_URL, None))

    def test_the_file_then_the_environment_then_the_flags(self):
        read = files({DEFAULT_FILE: "url = http://file:1\ntoken = from-file",
                      "/run/t": "from-token-file\n"})
        self.assertEqual(resolve(environ={}, read=read), Settings("http://file:1", "from-file"))
        environ = {"ORCHESTRATOR_ADMIN_URL": "http://env:2",
                   "ORCHESTRATOR_ADMIN_TOKEN": "from-env"}
        self.assertEqual(resolve(environ=environ, read=read), Settings("http://env:2", "from-env"))
        self.assertEqual(resolve(url="http://flag:3", token_file="/run/t", environ=environ,
                                 read=read), Settings("http://flag:3", "from-token-file"))

    def test_a_named_settings_file_must_exist(self):
        with self.assertRaises(SettingsError) as raised:
            resolve(config_file="/nope.conf", environ={}, read=files({}))
        self.assertEqual(str(raised.exception),
                         "/nope.conf: cannot read it: No such file or directory")

    def test_a_token_file_that_is_missing_or_empty_is_named(self):
        self.assertRaises(SettingsError, resolve, token_file="/missing", environ={},
                          read=files({}))
        with self.assertRaises(SettingsError) as raised:
            resolve(environ={"ORCHESTRATOR_ADMIN_TOKEN_FILE": "/empty"},
                    read=files({"/empty": "\n"}))
        self.assertEqual(str(raised.exception), "ORCHESTRATOR_ADMIN_TOKEN_FILE: /empty is empty")

    def test_the_token_is_never_in_a_repr(self):
        self.assertNotIn("s3cret", repr(Settings("http://h", "s3cret")))


class ProcessTests(SynchronousTestCase):
    """
    The console script as a process: one line on stderr and the exit status.
    """

    def ctl(self, *argv):
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith("ORCHESTRATOR_")}
        environ["ORCHESTRATOR_CTL_CONFIG"] = os.devnull
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv],
                              capture_output=True, text=True, timeout=60, env=environ)

    def test_nothing_listening_is_one_line_and_exit_7(self):
        done = self.ctl("--url", "http://127.0.0.1:9", "agents")
        self.assertEqual(done.returncode, 7)
        self.assertEqual(done.stderr.count("\n"), 1, done.stderr)
        self.assertTrue(done.stderr.startswith("orchestrator-ctl: cannot reach the admin API "
                                               "at http://127.0.0.1:9"), done.stderr)

    def test_bad_settings_are_exit_2(self):
        done = self.ctl("--url", "nonsense", "agents")
        self.assertEqual((done.returncode, done.stderr),
                         (2, "orchestrator-ctl: --url: expected an http(s) URL like "
                             "http://127.0.0.1:9090, got 'nonsense'\n"))

    def test_bad_arguments_are_exit_2(self):
        self.assertEqual(self.ctl("wake").returncode, 2)
