"""
Readers that read a file named by a value: secrets (tokens, URLs), the waiting-page
template, the events log file, the key and certificate of an C{ssl:} listener. They check
the file now, so a typo in a path is a configuration error rather than a failure later; a
secret's content is never shown.
"""

from __future__ import annotations

import os

from twisted.internet.endpoints import serverFromString

from orchestrator.config.readers import describe
from orchestrator.config.values import MIN_TOKEN_LENGTH, admin_token, http_url, non_empty_text


def server_endpoint(value: object) -> str:
    """
    A Twisted server endpoint description, checked by building the endpoint: for C{ssl:}
    that loads the key and certificate, so a missing file is reported now rather than at
    start-up, and a plugin's endpoint type checks its arguments. The endpoint is thrown
    away; the service builds its own on the reactor when it starts.
    """
    expected = 'expected a Twisted endpoint like "tcp:8080"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {describe(value)}")
    try:
        serverFromString(_UNUSED_REACTOR, value)
    # Endpoint parsers (plugins among them) raise many kinds of exceptions for bad input.
    except Exception as e:
        raise ValueError(f"{expected}, got {describe(value)} ({e})") from None
    return value


class _UnusedReactor:
    """
    The reactor of the endpoints L{server_endpoint} builds only to check a description:
    an endpoint keeps its reactor for C{listen}, which is never called on these.
    """


_UNUSED_REACTOR = _UnusedReactor()


def secret_file(value: object) -> str:
    """
    The text held by a file (a Docker secret such as C{/run/secrets/webhook_url}), read
    now, stripped. Its content is never shown: a problem names the file only.
    """
    path = non_empty_text(value)
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {describe(value)}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{describe(value)} is not UTF-8 text") from None


def token_file(value: object) -> str:
    """
    The admin token held by a file (a Docker secret), at least L{MIN_TOKEN_LENGTH}
    characters long.
    """
    token = secret_file(value)
    try:
        return admin_token(token)
    except ValueError:
        raise ValueError(f"{describe(value)} must hold a token of at least "
                         f"{MIN_TOKEN_LENGTH} characters") from None


def url_file(value: object) -> str:
    """
    The URL held by a file (a Docker secret such as C{/run/secrets/webhook_url}).
    """
    content = secret_file(value)
    try:
        return http_url(content)
    except ValueError:
        raise ValueError(f"{describe(value)} does not hold an http or https URL") from None


def template_file(value: object) -> str:
    """
    A readable UTF-8 file (the waiting page template), checked now so a typo in its path
    is a config error rather than a broken page later.
    """
    path = non_empty_text(value)
    try:
        with open(path, encoding="utf-8") as template:
            template.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"expected a readable UTF-8 template file, got {describe(value)} "
                         f"({getattr(error, 'strerror', None) or error})") from None
    return path


def log_file(value: object) -> str | None:
    """
    A file to append to, whose directory exists or can be created by this user.
    """
    if value is None:
        return None
    path = os.path.abspath(non_empty_text(value))
    ancestor = os.path.dirname(path)
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    if os.path.isdir(path) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"expected a file path in a directory this user can write, got "
                         f"{describe(value)} ({ancestor} is not writable)"
                         if not os.path.isdir(path) else
                         f"expected a file path, got the directory {describe(value)}")
    return path
