"""
HTTP header rules for a proxy: token lists, hop-by-hop removal (RFC 9110 section 7.6.1),
X-Forwarded-* and Host validation, the client's address, C{Date} values. Pure functions
over twisted's L{Headers}.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

#: Headers that describe one connection, never forwarded (plus any named in Connection).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
})
#: Framing is per hop: the proxy sets its own on each side.
_FRAMING = frozenset({b"content-length"})
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})

# RFC 9110 host: a reg-name of DNS labels, an IPv4 address, or a bracketed IPv6 literal,
# then an optional port.
_HOST = re.compile(
    rb"^(?:(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
    rb"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$",
    re.IGNORECASE,
)


def header_tokens(values: Iterable[bytes] | None) -> frozenset[bytes]:
    """
    The lower-cased tokens of a comma-separated header, across all its lines:
    C{[b"keep-alive, Upgrade"]} -> C{{b"keep-alive", b"upgrade"}}.
    """
    if not values:
        return frozenset()
    return frozenset(
        token.strip().lower()
        for value in values
        for token in value.split(b",")
        if token.strip()
    )


def is_valid_host(value: bytes) -> bool:
    """
    Whether C{value} is a syntactically valid C{Host} header value.
    """
    if len(value) > 260 or not _HOST.match(value):
        return False
    if value.startswith(b"["):
        try:
            ipaddress.IPv6Address(value[1 : value.index(b"]")].decode("ascii"))
        except ValueError:
            return False
    return True


def strip_hop_by_hop(headers: Headers, into: Headers | None = None) -> Headers:
    """
    A copy of C{headers} without hop-by-hop headers, the headers C{Connection} names,
    and framing (C{Content-Length}), keeping every value of repeated headers; copied
    C{into} an existing L{Headers} when given (a response's, saving a copy per request).
    """
    drop = HOP_BY_HOP | _FRAMING | header_tokens(headers.getRawHeaders(b"connection"))
    out = Headers() if into is None else into
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in drop:
            out.setRawHeaders(name, values)
    return out


def forwarded_request_headers(
    headers: Headers,
    *,
    client_address: str,
    secure: bool,
    host: bytes,
    trusted: bool,
) -> Headers:
    """
    The headers to send to a backend for a client request.

    X-Forwarded-For/-Proto/-Host are set from what this proxy saw; the client's own
    values are kept (and appended to) only when C{trusted}, i.e. the client is a
    configured trusted proxy. Otherwise they are spoofable and replaced.
    """
    out = strip_hop_by_hop(headers)
    for name in _FORWARDED:
        out.removeHeader(name)
    prior_for = headers.getRawHeaders(b"x-forwarded-for") if trusted else None
    chain = b", ".join(prior_for) + b", " if prior_for else b""
    out.setRawHeaders(b"X-Forwarded-For", [chain + client_address.encode("ascii")])
    proto = headers.getRawHeaders(b"x-forwarded-proto") if trusted else None
    out.setRawHeaders(b"X-Forwarded-Proto", [proto[0] if proto else (b"https" if secure else b"http")])
    forwarded_host = headers.getRawHeaders(b"x-forwarded-host") if trusted else None
    out.setRawHeaders(b"X-Forwarded-Host", [forwarded_host[0] if forwarded_host else host])
    return out


def client_address(request, trusted_proxies) -> tuple[str, bool]:
    """
    The address of a request's client as X-Forwarded-For records it (C{"unknown"} for
    one without an IP, a UNIX socket's), and whether it is one of the C{trusted_proxies}
    whose own X-Forwarded-* are kept.
    """
    address = getattr(request.getClientAddress(), "host", "") or "unknown"
    return address, is_trusted(address, trusted_proxies)


def is_trusted(address: str, networks) -> bool:
    """
    Whether the peer C{address} lies in one of the trusted proxy C{networks}.
    """
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


_last_date: tuple[int, bytes] = (-1, b"")


def http_date(seconds: float) -> bytes:
    """
    The C{Date} header value for the time C{seconds} (RFC 9110 section 5.6.7), made
    once per second: every answer needs one, and formatting it per request shows.
    """
    global _last_date
    second = int(seconds)
    if _last_date[0] != second:
        _last_date = (second, datetimeToString(second))
    return _last_date[1]
