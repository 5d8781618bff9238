"""
Where C{orchestrator-ctl} finds the admin API and its token: a flag, else the
environment, else a settings file, else the default (the admin listener's default
address, no token). Pure: the environment and the files are given.

The settings file (C{~/.config/orchestrator/ctl.conf}, or C{--config} /
C{ORCHESTRATOR_CTL_CONFIG}) holds C{key = value} lines: C{url}, C{token} or
C{token_file}; C{#} starts a comment.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import attrs

DEFAULT_URL = "http://127.0.0.1:9090"
DEFAULT_FILE = os.path.join("~", ".config", "orchestrator", "ctl.conf")

ENV_URL = "ORCHESTRATOR_ADMIN_URL"
ENV_TOKEN = "ORCHESTRATOR_ADMIN_TOKEN"
ENV_TOKEN_FILE = "ORCHESTRATOR_ADMIN_TOKEN_FILE"
ENV_FILE = "ORCHESTRATOR_CTL_CONFIG"

KEYS = ("url", "token", "token_file")


class SettingsError(Exception):
    """
    The settings cannot be used; the message names the source and the problem.
    """


@attrs.frozen
class Settings:
    url: str
    token: str | None = attrs.field(default=None, repr=False)


def parse_settings_file(text: str, source: str) -> dict[str, str]:
    """
    The C{key = value} lines of a settings file.

    @raise SettingsError: naming the line, for a line that is not one, an unknown key
        (with the closest known one) or a key given twice.
    """
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise SettingsError(f"{source}: line {number}: expected key = value")
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f', did you mean "{close[0]}"?' if close else f" (known: {', '.join(KEYS)})"
            raise SettingsError(f"{source}: line {number}: unknown key {key!r}{hint}")
        if key in found:
            raise SettingsError(f"{source}: line {number}: {key} is given twice")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[key] = value
    return found


def check_url(url: str, source: str) -> str:
    """
    An admin URL: http or https, a host, maybe a port, nothing else.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError(f"{source}: not a URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{source}: expected an http(s) URL like {DEFAULT_URL}, "
                            f"got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise SettingsError(f"{source}: expected only scheme, host and port, got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def resolve(*, url: str | None = None, token_file: str | None = None,
            config_file: str | None = None, environ: Mapping[str, str],
            read: Callable[[str], str]) -> Settings:
    """
    The settings from the flags (C{url}, C{token_file}, C{config_file}), the
    environment and the settings file. A token is never taken from a flag (it would
    show in the process list): from C{ORCHESTRATOR_ADMIN_TOKEN}, a token file, or the
    settings file.

    @param read: reads a file (C{~} expanded by the caller's reader); raises C{OSError}.
    @raise SettingsError: naming the source at fault.
    """
    file_name = config_file or environ.get(ENV_FILE)
    from_file: dict[str, str] = {}
    source = file_name or DEFAULT_FILE
    try:
        from_file = parse_settings_file(read(source), source)
    except OSError as error:
        if file_name is not None:  # asked for by name: it must be there
            raise SettingsError(f"{source}: cannot read it: {error.strerror or error}") from None

    if url is not None:
        chosen_url = check_url(url, "--url")
    elif environ.get(ENV_URL):
        chosen_url = check_url(environ[ENV_URL], ENV_URL)
    elif "url" in from_file:
        chosen_url = check_url(from_file["url"], f"{source}: url")
    else:
        chosen_url = DEFAULT_URL

    def token_from(path: str, where: str) -> str:
        try:
            token = read(path).strip()
        except OSError as error:
            raise SettingsError(f"{where}: cannot read {path}: "
                                f"{error.strerror or error}") from None
        if not token:
            raise SettingsError(f"{where}: {path} is empty")
        return token

    if token_file is not None:
        token: str | None = token_from(token_file, "--token-file")
    elif environ.get(ENV_TOKEN):
        token = environ[ENV_TOKEN].strip()
    elif environ.get(ENV_TOKEN_FILE):
        token = token_from(environ[ENV_TOKEN_FILE], ENV_TOKEN_FILE)
    elif from_file.get("token"):
        token = from_file["token"]
    elif from_file.get("token_file"):
        token = token_from(from_file["token_file"], f"{source}: token_file")
    else:
        token = None
    return Settings(chosen_url, token)
