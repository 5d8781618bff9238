"""
Readers of single values (durations, sizes, host names, origins, URLs, names, ...): pure
functions that read nothing but their argument. They are the rules: the schema reads the
file with them, and the model's validators hold values built in code to them.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import math
import re
from urllib.parse import urlsplit

from orchestrator.config.hosts import DEFAULT_PORTS, ip_address
from orchestrator.config.readers import describe, list_of
from orchestrator.event_types import EVENT_TYPES


def parse_duration(value: object) -> float:
    """
    Seconds from a duration: a number of seconds (C{30}, C{"1.5"}) or a number with one
    unit (C{"500ms"}, C{"30s"}, C{"15m"}, C{"1h"}).

    @raise ValueError: naming C{value}, if it is not a finite duration of 0 or more.
    """
    if isinstance(value, str):
        number, unit = _split_unit(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number, unit = value, "s"
    else:
        raise ValueError(f'expected a duration like "15m", got {describe(value)}')
    try:
        seconds = float(number) * _SECONDS_PER_UNIT[unit]
    except ValueError:
        raise ValueError(f'expected a duration like "15m", got {describe(value)}') from None
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {describe(value)}")
    if seconds < 0:
        raise ValueError(f"expected a duration of 0 or more, got {describe(value)}")
    return seconds


_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_BYTES_PER_UNIT = {"b": 1, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}

_SIZE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>B|KiB|MiB|GiB|TiB)?", re.IGNORECASE)

_SHARE = re.compile(r"(?P<number>[0-9]+(\.[0-9]+)?)\s*%")

_AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

# Docker's rule for service names.
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")

# Swarm resolves service names, which may contain "_", so backends are checked loosely.
_BACKEND_HOST = re.compile(r"[a-z0-9_.-]+")

_DOCKER_SCHEMES = ("unix", "tcp", "http", "https", "ssh", "npipe")





def http_url(value: object) -> str:
    expected = 'expected an http or https URL like "https://hooks.example.com/orchestrator"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {describe(value)}")
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (parses the port, raising ValueError when it is not one)
    except ValueError as e:
        raise ValueError(f"{expected}, got {describe(value)} ({e})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{expected}, got {describe(value)}")
    return value


def event_patterns(value: object) -> tuple[str, ...]:
    patterns = list_of(_event_pattern)(value)
    if not patterns:
        raise ValueError('expected at least one event type or pattern, got an empty list')
    return patterns


def _event_pattern(value: object) -> str:
    """
    An event type or a wildcard pattern that matches at least one known type, so a
    typo does not silently select nothing.
    """
    pattern = non_empty_text(value)
    if not any(fnmatch.fnmatchcase(known, pattern) for known in EVENT_TYPES):
        close = difflib.get_close_matches(pattern, list(EVENT_TYPES), n=1)
        hint = f'did you mean "{close[0]}"?' if close else (
            "known: " + ", ".join(EVENT_TYPES))
        raise ValueError(f"{describe(value)} matches no event type ({hint})")
    return pattern


def whole_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of 0 or more, got {describe(value)}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def _split_unit(text: str) -> tuple[str, str]:
    """
    C{"500ms"} -> C{("500", "ms")}; a bare number is in seconds.
    """
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return text[: -len(unit)], unit
    return text, "s"


def positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError(f"expected a duration greater than 0, got {describe(value)}")
    return seconds


def positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {describe(value)}")
    return value


def byte_size(value: object) -> int:
    """
    A positive number of bytes: C{16384}, C{"16KiB"}, C{"1MiB"}, C{"2GiB"}.
    """
    size = value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is not None:
            size = int(match["number"]) * _BYTES_PER_UNIT[(match["unit"] or "b").lower()]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'expected a size in bytes like 16384 or "16KiB", got {describe(value)}')
    return size


def share(value: object) -> float:
    """
    A share of a whole, greater than 0 and at most all of it: C{"50%"} -> C{0.5}.
    """
    match = _SHARE.fullmatch(value.strip()) if isinstance(value, str) else None
    fraction = float(match["number"]) / 100 if match is not None else 0.0
    if not 0 < fraction <= 1:
        raise ValueError(f'expected a share like "75%" (above 0%, at most 100%), got '
                         f"{describe(value)}")
    return fraction


def fraction(value: object) -> float:
    """
    A share as a number, greater than 0 and at most 1 (what L{share} reads C{"50%"} as).
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"expected a number above 0 and at most 1, got {describe(value)}")
    return float(value)


#: The smallest buffer a connection may have: below, every read and write is a few bytes.
MIN_BUFFER_BYTES = 4096


def buffer_size(value: object) -> int:
    """
    A size in bytes (L{byte_size}) of at least L{MIN_BUFFER_BYTES}: C{"32KiB"}.
    """
    size = byte_size(value)
    if size < MIN_BUFFER_BYTES:
        raise ValueError(f'expected at least {MIN_BUFFER_BYTES} bytes ("4KiB"), got {describe(value)}')
    return size


def non_empty_text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {describe(value)}")
    return value


def url_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f'expected a path starting with "/", got {describe(value)}')
    return value


def ip_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """
    An address or a CIDR network; host bits are allowed (C{10.1.2.3/8} is C{10.0.0.0/8}).
    """
    expected = 'expected an IP address or network like "10.0.0.0/8"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {describe(value)}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{expected}, got {describe(value)}") from None


def docker_url(value: object) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in _DOCKER_SCHEMES:
        raise ValueError(
            'expected a Docker URL like "unix:///var/run/docker.sock" or '
            f'"tcp://manager:2376", got {describe(value)}'
        )
    return value


def service_name(value: object) -> str:
    if not isinstance(value, str) or not _SERVICE_NAME.fullmatch(value):
        raise ValueError(
            'expected a Swarm service name (letters, digits, "_", "." and "-", at most 63 '
            f"characters), got {describe(value)}"
        )
    return value


def backend_address(value: object) -> tuple[str, str, int]:
    """
    The scheme, host and port of an agent's backend URL: http or https, a host and an
    optional port (80 or 443 by default), and nothing else. The host is as the URL has it
    but without the brackets of an IPv6 address: C{"http://[::1]:8081"} -> C{("http",
    "::1", 8081)}.
    """
    expected = 'expected a URL like "http://tasks.dutybound:8081"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {describe(value)}")
    reason = _backend_problem(value)
    if reason is not None:
        raise ValueError(f"{expected}, got {describe(value)} ({reason})")
    url = urlsplit(value)
    return url.scheme, url.hostname, url.port or DEFAULT_PORTS[url.scheme]


def backend_scheme(value: object) -> str:
    if not isinstance(value, str) or value not in DEFAULT_PORTS:
        raise ValueError(f'expected "http" or "https", got {describe(value)}')
    return value


def backend_host(value: object) -> str:
    """
    The host of a backend: a name Swarm resolves (C{tasks.dutybound}) or an IP address
    without brackets (C{::1}), lower-case as C{urlsplit} gives it.
    """
    if not isinstance(value, str):
        raise ValueError(f'expected a host like "tasks.dutybound", got {describe(value)}')
    reason = _backend_host_problem(value)
    if reason is not None:
        raise ValueError(f'expected a host like "tasks.dutybound", got {describe(value)} '
                         f"({reason})")
    return value


def port_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"expected a port from 1 to 65535, got {describe(value)}")
    return value


def _backend_problem(text: str) -> str | None:
    """
    Why C{text} is not a backend URL, or C{None} if it is one.
    """
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        return str(e)
    if url.scheme not in DEFAULT_PORTS:
        return "the scheme must be http or https"
    if "@" in url.netloc:
        return "user info is not allowed"
    reason = _backend_host_problem(url.hostname or "")
    if reason is not None:
        return reason
    if port == 0:
        return "the port must be from 1 to 65535"
    if url.path not in ("", "/"):
        return "a path is not allowed"
    if url.query or url.fragment:
        return "a query or fragment is not allowed"
    return None


def _backend_host_problem(host: str) -> str | None:
    """
    Why C{host} (as C{urlsplit} gives it) is not a backend's host, or C{None} if it is one.
    """
    if not host:
        return "a host is required"
    if host.startswith("["):
        return "an IPv6 address goes without brackets here"
    if ip_address(host) is None and not _BACKEND_HOST.fullmatch(host):
        return "the host is not a valid name"
    if "_" in host:
        # Stack services are named <stack>_<service>; their DNS aliases have no "_".
        return ('the host may not contain "_" (the HTTP client refuses such names): use '
                'the service\'s alias without the stack prefix, e.g. "tasks.demo" rather '
                'than "tasks.mystack_demo"')
    return None


def agent_name(value: object) -> str:
    if not (isinstance(value, str) and _AGENT_NAME.fullmatch(value)):
        raise ValueError(
            'expected an agent name like "dutybound" (lower-case letters, digits, "_" and '
            f'"-", at most 63 characters), got {describe(value)}'
        )
    return value


MIN_TOKEN_LENGTH = 16


def admin_token(value: object) -> str:
    """
    An admin API token: at least L{MIN_TOKEN_LENGTH} characters. The message never shows it.
    """
    if not isinstance(value, str) or len(value) < MIN_TOKEN_LENGTH:
        raise ValueError(f"expected a token of at least {MIN_TOKEN_LENGTH} characters")
    return value


def identities(value: object) -> tuple[str, ...]:
    """
    The credentials the agents' API accepts for an agent: one or both of C{token} and
    C{address}, each once.
    """
    items = list_of(non_empty_text)(value)
    known = ("token", "address")
    if not items or any(item not in known for item in items) or len(set(items)) != len(items):
        raise ValueError(f'expected one or both of "token" and "address", got {describe(value)}')
    return items
