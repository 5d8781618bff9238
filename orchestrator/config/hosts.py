"""
Host names and origins: the hosts that route to an agent (exact names and C{*.}
wildcards, from the configuration), the single hosts an agent registers at run time
(L{parse_registered_host}), and the origins a browser may open WebSockets from.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from orchestrator.config.readers import describe, list_of

#: The ports a URL of a scheme has when it names none.
DEFAULT_PORTS = {"http": 80, "https": 443}
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[^:/\[\]]+)(?::(?P<port>[0-9]{1,5}))?"
)


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
    address = ip_address(host)
    if address is not None:
        return f"[{address}]" if address.version == 6 else str(address)
    reason = _host_name_problem(host)
    if reason is not None:
        raise ValueError(
            f'expected a host name like "agent.example.com", got {describe(value)} ({reason})'
        )
    return host


def host_list(value: object) -> tuple[str, ...]:
    hosts = list_of(parse_host)(value)
    if not hosts:
        raise ValueError("expected at least one host, got an empty list")
    return hosts


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
    if ip_address(name) is not None:
        valid = name == host
    else:
        valid = _host_name_problem(host) is None
    if not valid or (port is not None and not 0 < int(port) < 65536):
        raise ValueError(f"{expected}, got {describe(value)}")
    if port is None or DEFAULT_PORTS.get(scheme) == int(port):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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


def parse_registered_host(value: object) -> str:
    """
    A host an agent registers at run time: one DNS name (internationalised names in
    their IDNA form, lower-cased, without a trailing dot), never a wildcard, an IP
    address or a port. Stricter than L{parse_host}: what an agent writes is input from a
    tenant, not from the operator.

    @raise ValueError: naming the reason, if it is not such a name.
    """
    expected = 'expected a host name like "preview-42.agent.example.com"'
    if not isinstance(value, str) or not value:
        raise ValueError(f"{expected}, got {describe(value)}")
    host = value.strip().rstrip(".")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as error:
            raise ValueError(f"{expected}, got {describe(value)} (not a valid "
                             f"internationalised name: {error})") from None
    host = host.lower()
    if ip_address(host) is not None or (host.count(":") > 1):
        raise ValueError(f"{expected}, got {describe(value)} (an IP address is not a host name)")
    if "*" in host:
        raise ValueError(f"{expected}, got {describe(value)} (a registered host is one name, "
                         "not a wildcard)")
    if "." not in host:
        raise ValueError(f"{expected}, got {describe(value)} (a single label is not a host "
                         "name on the public edge)")
    for label in host.split("."):
        if label.startswith("xn--"):
            # An A-label that is no valid IDNA would show as something else to a browser.
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as error:
                raise ValueError(f"{expected}, got {describe(value)} (not a valid "
                                 f"internationalised name: {error})") from None
    reason = _host_name_problem(host)
    if reason is not None:
        raise ValueError(f"{expected}, got {describe(value)} ({reason})")
    return host
