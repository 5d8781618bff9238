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
#: End-to-end headers a C{Connection} option cannot remove (RFC 9110 section 7.6.1 lets
#: it name only connection-specific ones): without Host, the backend would see its own
#: address.
_NEVER_CONNECTION_OPTIONS = frozenset({b"host"})
#: What the proxy sets itself on every request.
_SET_BY_PROXY = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto",
                           b"x-forwarded-host"})
#: The headers a backend or its framework takes as the word of the proxy in front of it:
#: the client's address (nginx's X-Real-IP, Rails' Client-IP, CDNs' True-Client-IP and
#: CF-Connecting-IP, ...), its scheme, host, port and path prefix (Werkzeug's ProxyFix,
#: Django, Express, Symfony, RFC 7239 Forwarded), and the URL to serve instead of the
#: request's (IIS and Symfony's X-Original-URL, X-Rewrite-URL). From a client that is
#: not a trusted proxy, all are spoofed: removed. A trusted proxy is trusted to have
#: set or removed them itself, so they pass from it, except the URL overrides (no front
#: sets those for its clients) and X-Forwarded-Host (always the host routed by).
_SPOOFABLE = frozenset({
    b"forwarded", b"x-real-ip", b"x-client-ip", b"client-ip", b"true-client-ip",
    b"x-cluster-client-ip", b"cf-connecting-ip", b"fastly-client-ip",
    b"x-forwarded-port", b"x-forwarded-prefix", b"x-forwarded-ssl", b"x-forwarded-scheme",
    b"x-forwarded-server", b"x-forwarded-protocol", b"front-end-https", b"x-url-scheme",
    b"x-original-host", b"x-host",
})
_URL_OVERRIDES = frozenset({b"x-original-url", b"x-rewrite-url"})
_DROP_FROM_TRUSTED = HOP_BY_HOP | _FRAMING | _SET_BY_PROXY | _URL_OVERRIDES
_DROP_FROM_UNTRUSTED = _DROP_FROM_TRUSTED | _SPOOFABLE

# RFC 9110 host: a reg-name of DNS labels, an IPv4 address, or a bracketed IPv6 literal,
# then an optional port.
_HOST = re.compile(
    rb"(?:(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
    rb"|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?",
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
    match = _HOST.fullmatch(value) if len(value) <= 260 else None
    if match is None:
        return False
    port = match[1]
    if port and int(port) > 65535:  # RFC 9110 section 4.2.1: a port is 16 bits
        return False
    if value.startswith(b"["):
        try:
            ipaddress.IPv6Address(value[1 : value.index(b"]")].decode("ascii"))
        except ValueError:
            return False
    return True


def strip_hop_by_hop(headers: Headers, into: Headers | None = None) -> Headers:
    """
    A copy of C{headers} without hop-by-hop headers, the headers C{Connection} names
    (but those it may not name, L{_NEVER_CONNECTION_OPTIONS}), and framing
    (C{Content-Length}), keeping every value of repeated headers; copied C{into} an
    existing L{Headers} when given (a response's, saving a copy per request).
    """
    drop = _connection_drop(HOP_BY_HOP | _FRAMING, headers)
    out = Headers() if into is None else into
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in drop:
            out.setRawHeaders(name, values)
    return out


def _connection_drop(always: frozenset[bytes], headers: Headers) -> frozenset[bytes]:
    options = headers.getRawHeaders(b"connection")
    if not options:
        return always
    return always | (header_tokens(options) - _NEVER_CONNECTION_OPTIONS)


def forwarded_request_headers(
    headers: Headers,
    *,
    client_address: str,
    secure: bool,
    host: bytes,
    trusted: bool,
) -> Headers:
    """
    The headers to send to a backend for a client request (see L{_SPOOFABLE} for the
    policy).

    C{Host} is C{host}, the host the request was routed by (an absolute-form target's
    authority wins over the client's C{Host}, RFC 9112 section 3.2.2), and so is
    C{X-Forwarded-Host}. X-Forwarded-For and -Proto are set from what this proxy saw;
    the client's own are kept (For appended to, Proto if it says C{http} or C{https})
    only when C{trusted}, i.e. the client is a configured trusted proxy. The other
    headers a backend would take as the proxy's word pass only from a trusted proxy.
    Header names with C{_} pass from nobody: CGI and WSGI read C{X_Forwarded_For} as
    C{X-Forwarded-For}.
    """
    drop = _connection_drop(_DROP_FROM_TRUSTED if trusted else _DROP_FROM_UNTRUSTED, headers)
    out = Headers()
    out.setRawHeaders(b"Host", [host])
    for name, values in headers.getAllRawHeaders():
        if b"_" not in name and name.lower() not in drop:
            out.setRawHeaders(name, values)
    prior_for = headers.getRawHeaders(b"x-forwarded-for") if trusted else None
    chain = b", ".join(prior_for) + b", " if prior_for else b""
    out.setRawHeaders(b"X-Forwarded-For", [chain + client_address.encode("ascii")])
    proto = b"https" if secure else b"http"
    if trusted:
        proto = _trusted_proto(headers.getRawHeaders(b"x-forwarded-proto"), proto)
    out.setRawHeaders(b"X-Forwarded-Proto", [proto])
    out.setRawHeaders(b"X-Forwarded-Host", [host])
    return out


def _trusted_proto(values: list[bytes] | None, own: bytes) -> bytes:
    """
    The scheme a trusted proxy says its client used: the last item it sent (its own,
    appended after whatever its client sent), if it is C{http} or C{https}.
    """
    if not values:
        return own
    last = values[-1].rpartition(b",")[2].strip().lower()
    return last if last in (b"http", b"https") else own


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
