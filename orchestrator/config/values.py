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


def parse_host(value: object) -> str:
    """
    A host name that routes to an agent, lower-cased: a DNS name (C{agent.example.com}), a
    wildcard for its subdomains (C{*.example.com}, at least two labels after the C{*.}), or
    an IP address (IPv6 in brackets, as in a C{Host} header: C{[::1]}).

    Ports are refused rather than dropped: the proxy routes on the name alone.

    @raise ValueError: naming C{value} and the reason, if it is none of those.
    """
    if not isinstance(value, str):
        raise ValueError(f'expected a host name like "agent.example.com", got {describe(value)}')
    host = value.lower()
    address = _ip_address(host)
    if address is not None:
        return f"[{address}]" if address.version == 6 else str(address)
    reason = _host_name_problem(host)
    if reason is not None:
        raise ValueError(
            f'expected a host name like "agent.example.com", got {describe(value)} ({reason})'
        )
    return host


def parse_origin(value: object) -> str:
    """
    An origin a browser may open WebSockets from, as browsers send it in C{Origin}:
    C{scheme://host} with an optional port (a default one is dropped), lower-cased. The
    host may be a C{*.} wildcard for every subdomain; C{null} is the opaque origin.

    @raise ValueError: naming C{value}, if it is none of those.
    """
    expected = 'expected an origin like "https://app.example.com"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {describe(value)}")
    origin = value.strip().lower()
    if origin == "null":
        return origin
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        raise ValueError(f"{expected}, got {describe(value)}")
    scheme, host, port = match["scheme"], match["host"], match["port"]
    name = host.removeprefix("*.")
    if _ip_address(name) is not None:
        valid = name == host
    else:
        valid = _host_name_problem(host) is None
    if not valid or (port is not None and not 0 < int(port) < 65536):
        raise ValueError(f"{expected}, got {describe(value)}")
    if port is None or _DEFAULT_PORTS.get(scheme) == int(port):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_BYTES_PER_UNIT = {"b": 1, "kib": 1024, "mib": 1024 * 1024}

_SIZE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>B|KiB|MiB)?", re.IGNORECASE)

_AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

# Docker's rule for service names.
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

# Swarm resolves service names, which may contain "_", so backends are checked loosely.
_BACKEND_HOST = re.compile(r"[a-z0-9_.-]+")

_DOCKER_SCHEMES = ("unix", "tcp", "http", "https", "ssh", "npipe")

_DEFAULT_PORTS = {"http": 80, "https": 443}

_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[^:/\[\]]+)(?::(?P<port>[0-9]{1,5}))?"
)


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
    A positive number of bytes: C{16384}, C{"16KiB"}, C{"1MiB"}.
    """
    size = value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is not None:
            size = int(match["number"]) * _BYTES_PER_UNIT[(match["unit"] or "b").lower()]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'expected a size in bytes like 16384 or "16KiB", got {describe(value)}')
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
    return url.scheme, url.hostname, url.port or _DEFAULT_PORTS[url.scheme]


def backend_scheme(value: object) -> str:
    if not isinstance(value, str) or value not in _DEFAULT_PORTS:
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
    if url.scheme not in _DEFAULT_PORTS:
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
    if _ip_address(host) is None and not _BACKEND_HOST.fullmatch(host):
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


def host_list(value: object) -> tuple[str, ...]:
    hosts = list_of(parse_host)(value)
    if not hosts:
        raise ValueError("expected at least one host, got an empty list")
    return hosts


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    The IP address C{text} spells (IPv6 with or without brackets), or C{None}.
    """
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_name_problem(host: str) -> str | None:
    """
    Why the lower-case C{host} is not a DNS name or a C{*.} wildcard, or C{None} if it is.
    """
    if ":" in host:
        return "a port is not allowed; the proxy ignores ports"
    if len(host) > 253:
        return "longer than 253 characters"
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return 'a wildcard needs at least two labels after "*."'
    for label in labels:
        if "*" in label:
            return '"*" is allowed only as the whole first label'
        if not _DNS_LABEL.fullmatch(label):
            return f'"{label}" is not a valid label (1-63 of a-z, 0-9 and "-", no "-" at the ends)'
    if labels[-1].isdigit():
        return "not a valid IP address"
    return None
