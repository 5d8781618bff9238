"""
Tests for L{orchestrator.config.files}: the readers that read a file named by a value
(secrets, the waiting-page template, the events log file, an C{ssl:} listener's key),
mostly through the file's keys.
"""

from __future__ import annotations

import twisted.test
from twisted.python.filepath import FilePath

from orchestrator.config.files import server_endpoint

from .helpers import SOURCE, ConfigTestCase, make_agent, make_document, parse

#: A key and certificate in one PEM file, shipped with Twisted's own tests.
SERVER_PEM = FilePath(twisted.test.__file__).sibling("server.pem").path


class ServerEndpointTests(ConfigTestCase):
    """
    A listener's endpoint description is checked by building the endpoint, which for
    C{ssl:} reads the key and certificate when the file is loaded.
    """

    def test_description_is_kept_as_written(self) -> None:
        self.assertEqual(server_endpoint("tcp:8080:interface=127.0.0.1"),
                         "tcp:8080:interface=127.0.0.1")

    def test_ssl_endpoint_with_a_readable_key_and_certificate_is_accepted(self) -> None:
        description = f"ssl:8443:privateKey={SERVER_PEM}"
        self.assertEqual(parse(make_document(listen={"proxy": description})).listen.proxy,
                         description)

    def test_ssl_endpoint_with_a_missing_key_is_refused_at_load(self) -> None:
        self.assertProblem(
            make_document(listen={"proxy": "ssl:8443:privateKey=/nonexistent/key.pem"}),
            'listen.proxy: expected a Twisted endpoint like "tcp:8080", got '
            '"ssl:8443:privateKey=/nonexistent/key.pem" ([Errno 2] No such file or '
            "directory: '/nonexistent/key.pem')",
        )

    def test_arguments_of_a_plugin_endpoint_type_are_checked(self) -> None:
        error = self.assertRaises(ValueError, server_endpoint, "tcp6:notaport")
        self.assertEqual(
            str(error),
            'expected a Twisted endpoint like "tcp:8080", got "tcp6:notaport" '
            "(invalid literal for int() with base 10: 'notaport')",
        )

    def test_a_description_that_is_not_text_is_refused(self) -> None:
        error = self.assertRaises(ValueError, server_endpoint, 8080)
        self.assertEqual(str(error), 'expected a Twisted endpoint like "tcp:8080", got 8080')


class EventsLogFileTests(ConfigTestCase):
    def test_log_file_in_a_directory_that_can_be_created_is_accepted(self):
        base = self.mktemp()
        config = parse(make_document(events={"log_file": base + "/deeper/events.jsonl"}))
        self.assertTrue(config.events.log_file.endswith("/deeper/events.jsonl"))

    def test_log_file_that_is_a_directory_is_refused(self):
        problems = self.problems(make_document(events={"log_file": "/tmp"}))
        self.assertEqual(len(problems), 1)
        self.assertIn("events.log_file: expected a file path, got the directory", problems[0])


class SecretFileTests(ConfigTestCase):
    """
    A consumer's URL read from a file (a Docker secret), whose content is never shown.
    """

    def test_url_is_read_from_a_secret_file_at_load_time(self):
        path = self.secret("https://hooks.slack.com/services/T0/B0/token\n")
        [consumer] = self.consumers({"type": "slack", "url_file": path, "blocks": True})
        self.assertEqual(consumer.url, "https://hooks.slack.com/services/T0/B0/token")
        self.assertTrue(consumer.blocks)

    def test_unreadable_secret_file_names_the_key_path_and_the_file(self):
        problems = self.problems(make_document(events={"consumers": [
            {"type": "webhook", "url_file": "/nonexistent/webhook_url"}]}))
        self.assertEqual(problems, [
            f'{SOURCE}: events.consumers[0].url_file: cannot read "/nonexistent/webhook_url": '
            "No such file or directory"])

    def test_secret_file_without_a_url_does_not_show_its_content(self):
        path = self.secret("hunter2")
        [problem] = self.problems(make_document(events={"consumers": [
            {"type": "webhook", "url_file": path}]}))
        self.assertIn("events.consumers[0].url_file: ", problem)
        self.assertIn("does not hold an http or https URL", problem)
        self.assertNotIn("hunter2", problem)


class TemplateFileTests(ConfigTestCase):
    """
    The waiting page's template is read when the file is loaded.
    """

    def test_missing_page_template_is_a_config_error(self):
        problems = self.problems(make_document({"a": make_agent(
            cold_start={"page": "/nonexistent/waiting.html"})}))
        self.assertIn("agents.a.cold_start.page: expected a readable UTF-8 template file",
                      problems[0])


class AdminTokenTests(ConfigTestCase):
    def test_token_is_read_from_its_file_and_never_shown(self):
        path = self.mktemp()
        with open(path, "w") as secret:
            secret.write("0123456789abcdef-token\n")
        config = parse(make_document(admin={"token_file": path}))
        self.assertEqual(config.admin.token, "0123456789abcdef-token")
        self.assertNotIn("0123456789abcdef", repr(config))

    def test_short_token_is_refused(self):
        path = self.mktemp()
        with open(path, "w") as secret:
            secret.write("short")
        problems = self.problems(make_document(admin={"token_file": path}))
        self.assertIn("admin.token_file:", problems[0])
        self.assertIn("at least 16 characters", problems[0])
