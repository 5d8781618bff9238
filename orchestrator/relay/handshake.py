"""
The relay's pure parts: recognising an upgrade, the handshake sent to the agent and the
headers of its answer passed back, origins, close codes, and RFC 6455 frame headers.
"""

from __future__ import annotations

import re
import struct

import attrs
from twisted.web.http_headers import Headers

from orchestrator.config.hosts import parse_origin
from orchestrator.http.headers import HOP_BY_HOP, forwarded_request_headers, header_tokens

#: Close codes the relay sends of its own accord (RFC 6455 section 7.4.1, IANA registry).
GOING_AWAY = 1001


PROTOCOL_ERROR = 1002


INTERNAL_ERROR = 1011


BAD_GATEWAY = 1014


#: Headers of the client's handshake that do not go to the backend as they are: Autobahn
#: writes its own (the key, version, Host line, ...), or takes them as separate values.
_HANDSHAKE_ONLY = frozenset({
    b"host", b"origin", b"user-agent", b"pragma", b"cache-control", b"sec-websocket-key",
    b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
    b"sec-websocket-accept",
})


def is_websocket_upgrade(method: bytes, headers: Headers) -> bool:
    """
    Whether a request asks to become a WebSocket: a C{GET} whose C{Connection} token list
    holds C{upgrade} (C{keep-alive, Upgrade} does) and whose C{Upgrade} holds C{websocket},
    both case-insensitive.
    """
    return (
        method == b"GET"
        and b"upgrade" in header_tokens(headers.getRawHeaders(b"connection"))
        and b"websocket" in header_tokens(headers.getRawHeaders(b"upgrade"))
    )


#: The one WebSocket version the relay speaks (RFC 6455's; Autobahn would also take the
#: drafts' 8).
VERSION = b"13"


def version_refused(headers: Headers) -> bool:
    """
    Whether a handshake names a version other than 13 (RFC 6455 section 4.2.2: the
    answer is 426 with the versions understood). One without any is malformed: 400,
    Autobahn's to say.
    """
    values = headers.getRawHeaders(b"sec-websocket-version")
    return bool(values) and [value.strip() for value in values] != [VERSION]


#: Close codes a peer may send (RFC 6455 section 7.4, IANA's registry): 1004 is reserved,
#: 1005, 1006 and 1015 never go on the wire, 1016-2999 are unassigned.
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def close_frame_problem(code: int | None, reason: bytes | None) -> str | None:
    """
    What is wrong with a close frame's code and reason (RFC 6455 section 5.5.1), or
    C{None}. (A 1-byte payload Autobahn finds itself.)
    """
    if code is None:
        return None
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        return f"invalid close code {code}"
    if reason:
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            return "a close reason that is not UTF-8"
    return None


def incomplete_code_point(payload: bytes) -> int:
    """
    How many bytes at the end of C{payload} (valid UTF-8 so far) belong to a code point
    it does not complete: 0 to 3.
    """
    for back in range(1, min(4, len(payload)) + 1):
        byte = payload[-back]
        if byte & 0xC0 != 0x80:  # an ASCII or a leading byte
            needs = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
            return back if needs > back else 0
    return min(3, len(payload))  # continuation bytes only: the code point began before


def offered_subprotocols(headers: Headers) -> tuple[str, ...]:
    """
    The subprotocols the client offers, in its order and spelling (they are
    case-sensitive, unlike other header tokens).
    """
    offered = []
    for value in headers.getRawHeaders(b"sec-websocket-protocol") or ():
        for token in value.split(b","):
            token = token.strip()
            if token:
                offered.append(token.decode("latin-1"))
    return tuple(offered)


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


#: Headers of an agent's 101 answer that belong to its own handshake or connection; the
#: client's 101 gets its own from Autobahn.
_ANSWER_HANDSHAKE_ONLY = HOP_BY_HOP | {
    b"sec-websocket-accept", b"sec-websocket-protocol", b"sec-websocket-extensions",
    b"sec-websocket-version", b"content-length", b"date", b"server",
}


def handshake_answer_headers(head: bytes) -> dict[str, list[str]]:
    """
    The end-to-end headers of an agent's 101 answer (its raw head), to pass on in the
    client's: C{Set-Cookie} and the like, repeated headers line by line in their order.
    A value that is not ASCII is left out rather than re-encoded wrongly, and so is a
    field the client must not be sent as is: a name that is no token, a value with a
    control character (a bare CR would start a header of the agent's making).
    """
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if colon and _TOKEN.fullmatch(name) and not _CONTROL.search(value):
            fields.append((name, value))
    drop = _ANSWER_HANDSHAKE_ONLY | header_tokens(v for n, v in fields if n.lower() == b"connection")
    passed: dict[str, list[str]] = {}
    for name, value in fields:
        if name.lower() not in drop and value.isascii():
            passed.setdefault(name.decode("ascii"), []).append(value.decode("ascii"))
    return passed


def origin_allowed(values: list[bytes] | None, allowed: tuple[str, ...]) -> bool:
    """
    Whether a handshake's C{Origin} header values pass an agent's C{allowed_origins}
    (already normalised by L{parse_origin}). No list allows any origin. A missing
    C{Origin} is allowed: browsers always send one, and other clients can send anything.
    """
    if not allowed or not values:
        return True
    if len(values) > 1:
        return False
    try:
        origin = parse_origin(values[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    for pattern in allowed:
        if origin == pattern:
            return True
        scheme, _, rest = pattern.partition("://*.")
        if rest and origin.startswith(scheme + "://") and origin.endswith("." + rest):
            return True
    return False


@attrs.frozen
class BackendHandshake:
    """
    What the relay asks the agent for in its opening handshake.
    """

    #: The client's path and query.
    resource: str
    #: The host the request was routed by, the backend's C{Host} as for HTTP.
    host: str
    origin: str | None
    user_agent: str | None
    #: The subprotocols the client offered, in its order.
    protocols: tuple[str, ...]
    #: Every other end-to-end header (C{Cookie}, C{Authorization}, C{X-Forwarded-*}, ...),
    #: repeated ones joined.
    headers: tuple[tuple[str, str], ...]


def backend_handshake(
    uri: bytes, headers: Headers, *, client_address: str, secure: bool, host: bytes,
    trusted: bool,
) -> BackendHandshake:
    """
    The handshake to send the backend for a client's upgrade request: its path and query,
    its end-to-end headers with X-Forwarded-* set as for HTTP, its offered subprotocols.
    """
    forwarded = forwarded_request_headers(
        headers, client_address=client_address, secure=secure, host=host, trusted=trusted,
    )
    passed = []
    for name, values in forwarded.getAllRawHeaders():
        if name.lower() in _HANDSHAKE_ONLY:
            continue
        joined = (b"; " if name.lower() == b"cookie" else b", ").join(values)
        text = _header_text(joined)
        if text is not None:
            passed.append((name.decode("ascii"), text))
    return BackendHandshake(
        resource=uri.decode("ascii", "replace"),
        host=host.decode("ascii"),
        origin=_single(headers, b"origin"),
        user_agent=_single(headers, b"user-agent"),
        protocols=offered_subprotocols(headers),
        headers=tuple(passed),
    )


def _single(headers: Headers, name: bytes) -> str | None:
    values = headers.getRawHeaders(name)
    return _header_text(values[0]) if values else None


def _header_text(value: bytes) -> str | None:
    # Autobahn writes the handshake as UTF-8 text: a value that is not UTF-8 would reach
    # the backend as other bytes than the client sent, so it is left out instead.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def frame_header(opcode: int, fin: bool, length: int, mask: bytes | None) -> bytes:
    """
    An RFC 6455 frame header. Written by hand because Autobahn can only send a frame whose
    payload is complete, or a streamed one it ends with an extra empty frame; the relay
    streams each frame as it arrives and keeps its boundaries.
    """
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, masked | length))
    elif length < 0x10000:
        header = struct.pack("!BBH", first, masked | 126, length)
    else:
        header = struct.pack("!BBQ", first, masked | 127, length)
    return header if mask is None else header + mask


def close_reason(text: str) -> bytes:
    """
    A close reason: UTF-8, cut to the 123 bytes a close frame has room for.
    """
    return text.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
