"""
The WebSocket relay: an upgrade request for an agent's host is taken over from twisted.web
by an Autobahn server protocol (the client's leg) and relayed, frame by frame, to an
Autobahn client protocol connected to the agent's backend (the agent's leg).

What passes through unchanged, both ways: text and binary frames with their fragmentation
(each frame is written out as it arrives, so a large message never sits in memory), pings
and pongs, and close codes with their reasons. What the relay adds, on both legs: limits on
message size (close 1009), UTF-8 and frame validation (1007, 1002), keepalive pings that
find dead peers, an opening-handshake timeout, and flow control: a leg whose peer reads
slowly pauses reading on the other leg. Every data frame counts as the agent's activity;
pings and pongs do not, so an open but idle tab lets the agent sleep.

Autobahn's defaults suit a trusted network, not a public edge (no size limits, any origin,
failing a connection by dropping it without a close frame); the factories below set each
of them. Its high-level message API would buffer whole messages and re-frame them, so the
legs use its frame hooks and write relayed frames themselves (L{_frame_header}).
"""

from __future__ import annotations

import json
import os
import struct

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.types import ConnectingRequest, ConnectionDeny
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import error as net
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from orchestrator.config import ProxyConfig, parse_origin
from orchestrator.drain import IDrainable
from orchestrator.headers import HOP_BY_HOP, forwarded_request_headers, header_tokens, is_trusted
from orchestrator.probe import describe_connection_error

log = Logger()

_OPEN = WebSocketProtocol.STATE_OPEN
_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_CLOSED = WebSocketProtocol.STATE_CLOSED

#: Close codes the relay sends of its own accord (RFC 6455 section 7.4.1, IANA registry).
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
BAD_GATEWAY = 1014

#: What Autobahn keeps of the opening handshakes and never needs after them.
_HANDSHAKE_ONLY_STATE = (
    "http_request_data", "http_response_data", "http_status_line", "http_headers",
    "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
    "websocket_origin", "websocket_protocols", "websocket_extensions", "websocket_key",
    "_wskey",
)

#: Headers of the client's handshake that do not go to the backend as they are: Autobahn
#: writes its own (the key, version, Host line, ...), or takes them as separate values.
_HANDSHAKE_ONLY = frozenset({
    b"host", b"origin", b"user-agent", b"pragma", b"cache-control", b"sec-websocket-key",
    b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
    b"sec-websocket-accept",
})


# Deciding: pure functions over the request's headers. --------------------------------


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
    A value that is not ASCII is left out rather than re-encoded wrongly.
    """
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name and name == name.strip():
            fields.append((name, value.strip(b" \t")))
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
    #: The client's C{Host}, passed on unchanged as the HTTP proxy does.
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


def _frame_header(opcode: int, fin: bool, length: int, mask: bytes | None) -> bytes:
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


# The two legs. --------------------------------------------------------------------------


class _ReadPause:
    """
    Flow control: registered as the producer of one leg's transport, it pauses reading
    on the other leg while that transport's buffer is full. Closing is the relay's job,
    so C{stopProducing} does nothing.
    """

    __slots__ = ("transport",)

    def __init__(self, transport) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _Leg:
    """
    What both legs share: data frames are written to the other leg as they arrive, pings
    and pongs are passed on, a close is passed on with its code and reason.

    The Autobahn options live on the class, not the instance (see L{_leg_class}): its
    C{connectionMade} copies onto the instance only options the instance lacks, and 30-odd
    copies per leg are a third of an idle socket's memory.

    @ivar relayed: the L{RelayedSocket} this leg belongs to.
    @ivar other: the other leg, once both are open.
    """

    relayed: RelayedSocket
    #: Whether frames to this leg's peer are masked (client to server).
    _masks = False
    other = None
    lost = False
    #: A relayed frame written out only in part: bytes still to come, and its masker.
    _out_remaining = 0
    _out_masker = None
    #: Autobahn's own frames (pings, closes) held while a relayed frame is half written.
    _held = None
    #: The frame just begun on this leg: (opcode, fin, length), written with its payload.
    _frame_start = None
    _message_size = 0
    _next_opcode = 1
    _own_pong = False
    send_queue = ()

    # Frames in.

    def onMessageBegin(self, isBinary: bool) -> None:
        self._next_opcode = 2 if isBinary else 1
        self._message_size = 0

    def onMessageFrameBegin(self, length: int) -> None:
        self._message_size += length
        limit = self.maxMessagePayloadSize
        if limit and self._message_size > limit:
            self._frame_start = None
            self._max_message_size_exceeded(
                self._message_size, limit,
                f"message of {self._message_size} bytes or more, over the limit of {limit}")
            return
        self._frame_start = (self._next_opcode, self.current_frame.fin, length)
        self._next_opcode = 0
        if self.state == _OPEN:
            self.relayed.activity()

    def onMessageFrameData(self, payload: bytes) -> None:
        other = self.other
        if other is None:
            return
        start = self._frame_start
        if start is not None:
            self._frame_start = None
            # A frame begun after a close (sent or received) is dropped; one begun before
            # is finished, so the other leg's stream stays well-formed.
            if self.state == _OPEN and other.state == _OPEN:
                other.write_frame(*start, payload)
        elif other._out_remaining:
            other.write_frame_rest(payload)

    def onMessageFrameEnd(self) -> None:
        pass

    def onMessageEnd(self) -> None:
        pass

    def onPing(self, payload: bytes) -> None:
        # The other peer answers: a ping through the relay measures the whole path.
        other = self.other
        if other is not None and self.state == _OPEN:
            other.sendPing(payload)

    def onAutoPong(self, *args) -> None:
        self._own_pong = True

    def onPong(self, payload: bytes) -> None:
        if self._own_pong:  # the answer to our keepalive ping, not the other peer's
            self._own_pong = False
            return
        other = self.other
        if other is not None and self.state == _OPEN:
            other.sendPong(payload)

    def onCloseFrame(self, code, reasonRaw):
        by_peer = self.state == _OPEN
        # Autobahn predates IANA's 1014 (bad gateway) and would call it a protocol error;
        # it answers it as 1011, and the other peer still gets 1014.
        stop = super().onCloseFrame(INTERNAL_ERROR if code == BAD_GATEWAY else code, reasonRaw)
        if by_peer and not self.failedByMe:
            self.relayed.closed_by_peer(self, code, reasonRaw)
        return stop

    def _fail_connection(self, code=GOING_AWAY, reason="going away") -> None:
        # Autobahn's one path for failing a connection (protocol error 1002, bad UTF-8
        # 1007, too big 1009): the other peer hears of it at once, not when TCP closes.
        already = self.failedByMe or self.state == _CLOSED
        super()._fail_connection(code, reason)
        if not already:
            self.relayed.failed(self, code, reason)

    def onClose(self, wasClean: bool, code, reason) -> None:
        self.lost = True
        # Autobahn leaves this timer running when TCP closes before the close reply came;
        # it would keep the leg in memory for nothing.
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        self.relayed.lost(self)

    # Frames out.

    def write_frame(self, opcode: int, fin: bool, length: int, payload: bytes) -> None:
        """
        Start writing a relayed frame: its header and the first part of its payload.
        """
        if not self._masks:
            mask = masker = None
        else:
            mask = os.urandom(4)
            masker = create_xor_masker(mask, length) if length else None
            if masker is not None:
                payload = masker.process(payload)
        self._out_masker = masker
        self._out_remaining = length - len(payload)
        self.transport.write(_frame_header(opcode, fin, length, mask) + payload)
        if not self._out_remaining and self._held:
            self._release_held()

    def write_frame_rest(self, payload: bytes) -> None:
        """
        Write more of a relayed frame's payload.
        """
        if self._out_masker is not None:
            payload = self._out_masker.process(payload)
        self._out_remaining -= len(payload)
        self.transport.write(payload)
        if not self._out_remaining:
            self._out_masker = None
            if self._held:
                self._release_held()

    def sendData(self, data: bytes, sync: bool = False, chopsize=None) -> None:
        # Every frame Autobahn sends itself goes through here; none may land inside a
        # relayed frame that is still being written.
        if self._out_remaining:
            if self._held is None:
                self._held = []
            self._held.append(data)
            return
        super().sendData(data, sync, chopsize)

    def _release_held(self) -> None:
        held, self._held = self._held, None
        for data in held:
            super().sendData(data)

    def close_with(self, code: int | None, reason: bytes | None) -> None:
        """
        Send a close frame with any code (Autobahn's C{sendClose} allows only 1000 and
        3000-4999, which would rewrite what the peers said).
        """
        if self.state == _OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abortConnection()

    def settle(self, traffic: TrafficStats) -> None:
        """
        Both handshakes are done: shed what only they needed. An idle socket is mostly
        these two legs, so every kilobyte here is a kilobyte per open tab.
        """
        state = self.__dict__
        for name in _HANDSHAKE_ONLY_STATE:
            state.pop(name, None)
        # The send queue serves Autobahn's synchronous writes, which the relay never
        # makes (the class's empty tuple stands in, and would fail loudly if it did); the
        # traffic counters are kept for all legs together.
        del state["send_queue"]
        state["trafficStats"] = traffic
        # A dict never shrinks when keys go; a copy is sized for what is left.
        self.__dict__ = dict(state)


class FrontendLeg(_Leg, WebSocketServerProtocol):
    """
    The client's leg: Autobahn's server side, on the connection taken from twisted.web.
    Its opening handshake waits for the backend's (C{onConnect} returns a Deferred).
    """

    def onConnect(self, request):
        return self.relayed.connect_backend()

    def onOpen(self) -> None:
        self.relayed.frontend_open()

    def sendHttpErrorResponse(self, code, reason, responseHeaders=None) -> None:
        # Every refused handshake (ours, or Autobahn's for a malformed one) answers in
        # JSON, as the rest of the proxy does.
        headers = list(responseHeaders or ())
        if code == 503:
            headers.append(("Retry-After", str(self.relayed.retry_after)))
        self.sendData(_http_error(code, self.relayed.error_body(reason), headers))


class BackendLeg(_Leg, WebSocketClientProtocol):
    """
    The agent's leg: Autobahn's client side, connected to the agent's backend.
    """

    _masks = True
    #: Why the agent refused the handshake: (HTTP status or 0, reason).
    refusal: tuple[int, str] | None = None

    def onConnecting(self, transport_details):
        handshake = self.relayed.handshake
        # Autobahn writes "Host: <host>:<port>"; the backend gets the client's Host as it
        # came (a backend comparing Origin with Host must see the same value).
        self.sendData = self._send_handshake
        return ConnectingRequest(
            host=handshake.host,
            port=0,
            resource=handshake.resource,
            headers=dict(handshake.headers),
            useragent=handshake.user_agent,
            origin=handshake.origin,
            protocols=list(handshake.protocols),
        )

    def _send_handshake(self, data: bytes, sync: bool = False, chopsize=None) -> None:
        del self.sendData
        host = self.relayed.handshake.host.encode("ascii")
        data = data.replace(b"\r\nHost: " + host + b":0\r\n", b"\r\nHost: " + host + b"\r\n", 1)
        self.sendData(data, sync, chopsize)

    def onConnect(self, response) -> None:
        # The subprotocol list Autobahn checked the answer against was this connection's.
        self.factory = self.factory.shared
        self.relayed.backend_open(response.protocol,
                                  handshake_answer_headers(self.http_response_data))

    def failHandshake(self, reason: str) -> None:
        status_line = getattr(self, "http_status_line", "") or ""
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.refusal = (status, reason)
        super().failHandshake(reason)


class _OneConnection:
    """
    The factory one backend connection's handshake sees: the shared one, with the
    subprotocols this client offered (Autobahn checks the backend's choice against
    C{factory.protocols}).
    """

    __slots__ = ("shared", "protocols")

    def __init__(self, shared, protocols) -> None:
        self.shared = shared
        self.protocols = protocols

    def __getattr__(self, name):
        return getattr(self.shared, name)


class _OneLeg(Factory):
    """
    The factory of one leg, built in advance: what L{WebSocketResource} takes the
    client's connection over with, and what the backend endpoint connects. Quiet: two
    log lines per socket would cost more than the socket.
    """

    noisy = False

    def __init__(self, leg: _Leg) -> None:
        self._leg = leg

    def buildProtocol(self, addr) -> _Leg:
        return self._leg


class _ReactorTimer:
    """
    Autobahn's timer interface on the injected reactor (it would use txaio's global one).
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def call_later(self, delay, function, *args, **kwargs):
        return _Cancellable(self._reactor.callLater(delay, function, *args, **kwargs))


class _Cancellable:
    """
    A delayed call that may be cancelled after it ran, as Autobahn sometimes does.
    """

    __slots__ = ("_call",)

    def __init__(self, call) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()



# One relayed socket. -----------------------------------------------------------------


def _no_activity() -> None:
    pass


@implementer(IDrainable)
class RelayedSocket:
    """
    One client WebSocket relayed to one agent: its two legs from the upgrade request to
    the last close. Registered in C{agent.connections} from the takeover until both TCP
    connections are closed, so that the agent's sleep and the shutdown drain it.

    @ivar activity: called for every data frame: the agent's C{touch}, unless the upgrade
        was a request that does not count (an uptime monitor's).
    """

    __slots__ = (
        "relay", "agent", "handshake", "activity", "frontend", "backend", "_connecting",
        "_opening", "_handshake_timer", "_deadlines", "_done",
    )

    def __init__(self, relay: WebSocketRelay, agent, handshake: BackendHandshake,
                 tracked: bool) -> None:
        self.relay = relay
        self.agent = agent
        self.handshake = handshake
        self.activity = agent.touch if tracked else _no_activity
        self.frontend: FrontendLeg | None = None
        self.backend: BackendLeg | None = None
        self._connecting = None
        self._opening = None
        self._handshake_timer = None
        self._deadlines = None
        self._done = False

    @property
    def retry_after(self) -> int:
        return self.relay.config.retry_after

    def error_body(self, message: str) -> dict:
        """
        The JSON body of a refused handshake, as the HTTP proxy's errors read.
        """
        return {"error": message, **self.agent.health()}

    # Opening ----------------------------------------------------------------------------

    def connect_backend(self) -> Deferred:
        """
        Connect to the agent and start its handshake. The Deferred returned (to Autobahn,
        from the client's C{onConnect}) fires with the subprotocol the agent chose and the
        headers of its answer, which the client then gets, or fails with the refusal the
        client gets.
        """
        relay = self.relay
        self._opening = Deferred()
        self._handshake_timer = relay.reactor.callLater(
            relay.config.websocket.handshake_timeout, self._handshake_too_slow)
        self.backend = relay.backend_leg(self)
        self._connecting = relay.endpoint(self.agent).connect(_OneLeg(self.backend))
        self._connecting.addCallbacks(self._backend_connected, self._backend_unreachable)
        return self._opening

    def _backend_connected(self, protocol) -> None:
        self._connecting = None

    def _backend_unreachable(self, failure) -> None:
        self._connecting = None
        self.backend = None
        if not failure.check(CancelledError):
            name = self.agent.name
            if failure.check(net.TimeoutError, net.TCPTimedOutError):
                self._refuse(504, f"agent {name} did not accept a connection in time")
            else:
                reason = describe_connection_error(failure.value)
                self._refuse(502, f"agent {name} is unreachable: {reason}")
        self._check_done()

    def _handshake_too_slow(self) -> None:
        self._handshake_timer = None
        timeout = self.relay.config.websocket.handshake_timeout
        self._refuse(504, f"agent {self.agent.name} did not complete the WebSocket "
                          f"handshake within {timeout:g}s")

    def backend_open(self, subprotocol: str | None, headers: dict[str, list[str]]) -> None:
        """
        The agent accepted the handshake: accept the client's, with the same subprotocol
        and the agent's end-to-end headers (its cookies, say).
        """
        self._cancel_handshake_timer()
        frontend = self.frontend
        if frontend is None or frontend.lost or frontend.state != _CONNECTING:
            self.backend.abort()
            return
        if subprotocol is not None and subprotocol not in frontend.websocket_protocols:
            self._refuse(502, f"agent {self.agent.name} chose subprotocol {subprotocol!r}, "
                              "which the client did not offer")
            return
        opening, self._opening = self._opening, None
        opening.callback((subprotocol, headers))

    def frontend_open(self) -> None:
        """
        Both handshakes are done: join the legs, each pausing the other's reads while its
        own peer is slow to read.
        """
        frontend, backend = self.frontend, self.backend
        frontend.other, backend.other = backend, frontend
        frontend.transport.registerProducer(_ReadPause(backend.transport), True)
        backend.transport.registerProducer(_ReadPause(frontend.transport), True)
        frontend.settle(self.relay.traffic)
        backend.settle(self.relay.traffic)
        self.handshake = None

    def _refuse(self, code: int, message: str) -> None:
        """
        Fail the client's handshake with C{code} and a JSON body, and give up on the
        agent's.
        """
        self._cancel_handshake_timer()
        self._give_up_backend()
        opening, self._opening = self._opening, None
        if opening is None:
            return
        frontend = self.frontend
        if frontend is not None and not frontend.lost and frontend.state == _CONNECTING:
            log.info("WebSocket to {agent} refused ({code}): {reason}", agent=self.agent.name,
                     code=code, reason=message, event="websocket.refused")
            opening.errback(ConnectionDeny(code, message))

    def _abandon(self) -> None:
        """
        The client left during the handshake: stop the agent's.
        """
        self._cancel_handshake_timer()
        self._give_up_backend()
        self._opening = None

    def _give_up_backend(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        elif self.backend is not None and self.backend.other is None:
            self.backend.abort()

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    # Closing ----------------------------------------------------------------------------

    def closed_by_peer(self, leg: _Leg, code: int | None, reason: bytes | None) -> None:
        """
        A peer sent a close: the other peer gets the same code and reason.
        """
        if leg.other is not None:
            leg.other.close_with(code, reason)

    def failed(self, leg: _Leg, code: int, reason: str) -> None:
        """
        The relay failed C{leg} (its peer sent something invalid or too big): the other
        peer hears why, or, if it was in the middle of a frame from that leg, is cut.
        """
        other = leg.other
        if other is None:
            return
        if other._out_remaining:
            other.abort()
        elif leg is self.frontend:
            other.close_with(GOING_AWAY, _reason(f"client connection failed ({code})"))
        else:
            other.close_with(BAD_GATEWAY, _reason(f"agent connection failed ({code}: {reason})"))

    def lost(self, leg: _Leg) -> None:
        """
        C{leg}'s TCP connection is gone: close the other leg (cleanly if it can), and
        give it a bounded time to finish.
        """
        other = leg.other
        if other is None:  # during the handshakes
            if leg is self.frontend:
                self._abandon()
            else:
                status, reason = leg.refusal or (0, "it closed the connection")
                code = status if 400 <= status < 600 else 502
                self._refuse(code, f"agent {self.agent.name} refused the WebSocket "
                                   f"handshake: {reason}")
        elif not other.lost:
            other.transport.unregisterProducer()
            if other._out_remaining:
                other.abort()  # half a frame from the lost leg went out: nothing can follow
            elif leg is self.frontend:
                other.close_with(GOING_AWAY, b"client went away")
            else:
                other.close_with(INTERNAL_ERROR, b"agent connection lost")
            if not other.transport.disconnecting:
                other.transport.resumeProducing()  # reads paused for the lost leg's sake
            deadline = self.relay.reactor.callLater(
                self.relay.config.websocket.ping_timeout, other.abort)
            self._deadlines = (self._deadlines or ()) + (deadline,)
        self._check_done()

    def _check_done(self) -> None:
        frontend, backend = self.frontend, self.backend
        if self._done or self._connecting is not None:
            return
        if frontend is not None and not frontend.lost:
            return
        if backend is not None and backend.transport is not None and not backend.lost:
            return
        self._done = True
        self._cancel_handshake_timer()
        for deadline in self._deadlines or ():
            if deadline.active():
                deadline.cancel()
        self.agent.connections.discard(self)

    # IDrainable -------------------------------------------------------------------------

    def go_away(self) -> None:
        """
        Close 1001 to both peers; a handshake still in progress gets 503.
        """
        if self.frontend is not None and self.frontend.other is not None:
            self.frontend.close_with(GOING_AWAY, b"going away")
            self.backend.close_with(GOING_AWAY, b"going away")
        else:
            self._refuse(503, f"agent {self.agent.name} is going away")

    def abort(self) -> None:
        """
        Drop both TCP connections now.
        """
        self._cancel_handshake_timer()
        if self._connecting is not None:
            self._connecting.cancel()
        for leg in (self.frontend, self.backend):
            if leg is not None:
                leg.abort()


def _reason(text: str) -> bytes:
    """
    A close reason: UTF-8, cut to the 123 bytes a close frame has room for.
    """
    return text.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")


def _http_error(code: int, body: dict, headers) -> bytes:
    """
    A complete HTTP error response with a JSON body, for a connection that is no longer
    twisted.web's.
    """
    payload = json.dumps(body).encode("utf-8")
    lines = [b"HTTP/1.1 %d %s" % (code, RESPONSES.get(code, b"Error")),
             b"Content-Type: application/json", b"Cache-Control: no-store",
             b"Content-Length: %d" % len(payload), b"Connection: close"]
    lines.extend(f"{name}: {value}".encode("latin-1") for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


# The entry point. --------------------------------------------------------------------


def _leg_class(base: type, factory) -> type:
    """
    A subclass of C{base} carrying C{factory}'s Autobahn options as class attributes, so
    that no leg copies them into its own dict (see L{_Leg}).
    """
    options = {}
    for name in base.CONFIG_ATTRS:
        value = getattr(factory, name)
        options[name] = staticmethod(value) if callable(value) else value
    return type(base.__name__, (base,), options)


class WebSocketRelay:
    """
    The relay's shared parts, one per proxy listener: Autobahn factories set up for a
    public edge, and the handler for upgrade requests.
    """

    def __init__(self, config: ProxyConfig, reactor, endpoint=None) -> None:
        """
        @param endpoint: C{agent -> IStreamClientEndpoint} for the backend connections;
            by default a L{HostnameEndpoint} to the agent's backend (TLS for C{https}).
        """
        self.config = config
        self.reactor = reactor
        self.endpoint = endpoint or self._backend_endpoint
        timers = config.websocket
        common = dict(
            utf8validateIncoming=True,
            applyMask=True,
            # Fail a connection with a close frame carrying the RFC code, not a bare drop.
            failByDrop=False,
            echoCloseCodeReason=True,
            # The relay times the whole handshake itself (the agent's included).
            openHandshakeTimeout=0,
            closeHandshakeTimeout=timers.ping_timeout,
            autoPingInterval=timers.ping_interval,
            autoPingTimeout=timers.ping_timeout if timers.ping_interval else 0,
            autoFragmentSize=0,
            tcpNoDelay=True,
        )
        server = WebSocketServerFactory(server="", reactor=reactor)
        server.setProtocolOptions(webStatus=False, requireMaskedClientFrames=True,
                                  maskServerFrames=False, maxConnections=0, **common)
        client = WebSocketClientFactory(useragent=None, reactor=reactor)
        # The relay bounds the wait for the agent to drop TCP after a close itself.
        client.setProtocolOptions(maskClientFrames=True, acceptMaskedServerFrames=False,
                                  serverConnectionDropTimeout=0, **common)
        server._batched_timer = client._batched_timer = _ReactorTimer(reactor)
        self._server_factory = server
        self._client_factory = client
        #: Autobahn's traffic counters, for all relayed sockets together.
        self.traffic = TrafficStats()
        self._frontend_class = _leg_class(FrontendLeg, server)
        self._backend_class = _leg_class(BackendLeg, client)

    def _backend_endpoint(self, agent):
        backend = agent.config.backend
        endpoint = HostnameEndpoint(self.reactor, backend.host, backend.port,
                                    timeout=self.config.connect_timeout)
        if backend.scheme == "https":
            endpoint = wrapClientTLS(optionsForClientTLS(backend.host), endpoint)
        return endpoint

    def relay(self, request, agent, host: bytes, uri: bytes, ignored: bool) -> _Upgrade:
        """
        The handler of an upgrade request the proxy would forward to C{agent}.
        """
        client = request.getClientAddress()
        address = getattr(client, "host", "") or "unknown"
        handshake = backend_handshake(
            uri, request.requestHeaders, client_address=address, secure=request.isSecure(),
            host=host, trusted=is_trusted(address, self.config.trusted_proxies),
        )
        return _Upgrade(self, agent, handshake, tracked=not ignored)

    def frontend_leg(self, relayed: RelayedSocket) -> FrontendLeg:
        leg = self._frontend_class()
        leg.factory = self._server_factory
        leg.relayed = relayed
        leg.maxMessagePayloadSize = relayed.agent.config.websocket.max_message_size
        return leg

    def backend_leg(self, relayed: RelayedSocket) -> BackendLeg:
        leg = self._backend_class()
        leg.factory = _OneConnection(self._client_factory, list(relayed.handshake.protocols))
        leg.relayed = relayed
        leg.maxMessagePayloadSize = relayed.agent.config.websocket.max_message_size
        return leg


class _Upgrade:
    """
    The proxy's handler of one upgrade request: refuse it (origin, socket cap) as
    twisted.web, or take its connection over.
    """

    body = None

    def __init__(self, relay: WebSocketRelay, agent, handshake: BackendHandshake,
                 tracked: bool) -> None:
        self._relay = relay
        self._agent = agent
        self._handshake = handshake
        self._tracked = tracked

    def render(self, request):
        agent, limits = self._agent, self._agent.config.websocket
        if not origin_allowed(request.requestHeaders.getRawHeaders(b"origin"),
                              limits.allowed_origins):
            origin = (request.getHeader(b"origin") or b"").decode("latin-1")
            return _answer(request, 403, {
                "error": f"origin {origin!r} may not open WebSockets to agent {agent.name}"})
        if len(agent.connections) >= limits.max_connections:
            return _answer(request, 503, {
                "error": f"agent {agent.name} has {limits.max_connections} open WebSockets, "
                         "the most allowed", **agent.health()},
                retry_after=self._relay.config.retry_after)
        relayed = RelayedSocket(self._relay, agent, self._handshake, self._tracked)
        agent.connections.add(relayed)
        relayed.activity()
        frontend = relayed.frontend = self._relay.frontend_leg(relayed)
        channel = request.channel
        # From here on the connection is Autobahn's: twisted.web will not see it close, so
        # the Site must not wait for it at shutdown (the agent's registry does), and its
        # channel must stop being the transport's producer (the relay's flow control
        # registers its own).
        channel.transport.unregisterProducer()
        channels = getattr(channel.site, "channels", None)
        if channels is not None:
            channels.discard(channel)
        WebSocketResource(_OneLeg(frontend)).render(request)
        return NOT_DONE_YET


def _answer(request, code: int, body: dict, retry_after: int | None = None) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    if retry_after is not None:
        request.setHeader(b"Retry-After", str(retry_after).encode("ascii"))
    return json.dumps(body).encode("utf-8")
