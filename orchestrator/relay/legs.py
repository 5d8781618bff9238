"""
The two legs of a relayed WebSocket, both Autobahn protocols: the client's (server side,
on the connection taken from twisted.web) and the agent's (client side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.relay.socket import RelayedSocket

import os

from autobahn.twisted.websocket import WebSocketClientProtocol, WebSocketServerProtocol
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.types import ConnectingRequest
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet.protocol import Factory

from orchestrator.relay.handshake import (
    BAD_GATEWAY,
    GOING_AWAY,
    INTERNAL_ERROR,
    PROTOCOL_ERROR,
    close_frame_problem,
    frame_header,
    handshake_answer_headers,
    incomplete_code_point,
)

STATE_OPEN = WebSocketProtocol.STATE_OPEN


STATE_CONNECTING = WebSocketProtocol.STATE_CONNECTING


STATE_CLOSING = WebSocketProtocol.STATE_CLOSING


STATE_CLOSED = WebSocketProtocol.STATE_CLOSED


#: What Autobahn keeps of the opening handshakes and never needs after them.
_HANDSHAKE_ONLY_STATE = (
    "http_request_data", "http_response_data", "http_status_line", "http_headers",
    "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
    "websocket_origin", "websocket_protocols", "websocket_extensions", "websocket_key",
    "_wskey",
)


class ReadPause:
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


class Leg:
    """
    What both legs share: data frames are written to the other leg as they arrive, pings
    and pongs are passed on, a close is passed on with its code and reason.

    The Autobahn options live on the class, not the instance (see L{leg_class}): its
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
    #: The end of a final text frame's payload that does not complete a code point yet:
    #: held back until it does (else the frame is invalid and never passed on whole).
    _held_tail = b""
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
        self._held_tail = b""
        if self.state == STATE_OPEN:
            self.relayed.frame_began(self)

    def onMessageFrameData(self, payload: bytes) -> None:
        other = self.other
        if other is None:
            return
        if self._held_tail:
            payload, self._held_tail = self._held_tail + payload, b""
        frame = self.current_frame
        if (frame.fin and self.utf8validateIncomingCurrentMessage
                and not self.utf8validateLast[1]):
            # Autobahn finds a text message ending inside a code point only once the
            # frame has ended, when its bytes would have been passed on.
            cut = len(payload) - incomplete_code_point(payload)
            payload, self._held_tail = payload[:cut], payload[cut:]
        start = self._frame_start
        if start is not None:
            self._frame_start = None
            if self._held_tail and self.current_frame_masker.pointer() == frame.length:
                return  # the whole frame is here and invalid: 1007 follows, nothing else
            # A frame begun after a close (sent or received) is dropped; one begun before
            # is finished, so the other leg's stream stays well-formed.
            if self.state == STATE_OPEN and other.state == STATE_OPEN:
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
        if other is not None and self.state == STATE_OPEN:
            other.sendPing(payload)

    def onAutoPong(self, *args) -> None:
        self._own_pong = True

    def onPong(self, payload: bytes) -> None:
        if self._own_pong:  # the answer to our keepalive ping, not the other peer's
            self._own_pong = False
            return
        other = self.other
        if other is not None and self.state == STATE_OPEN:
            other.sendPong(payload)

    def onCloseFrame(self, code, reasonRaw):
        by_peer = self.state == STATE_OPEN
        problem = close_frame_problem(code, reasonRaw) if by_peer else None
        if problem is not None:
            self._fail_connection(PROTOCOL_ERROR, problem)
        if self.state == STATE_CLOSING and self.failedByMe:
            # This leg's close went out for the peer's fault (perhaps this very frame's):
            # Autobahn would take the peer's close for the answer and abort the
            # connection, the 1002 unsent. It is flushed, then the connection closed.
            self.wasClean = True
            self.dropConnection(abort=False)
            self.relayed.cut_later(self)
            return True
        # Autobahn predates IANA's 1014 (bad gateway) and would call it a protocol error;
        # it answers it as 1011, and the other peer still gets 1014.
        stop = super().onCloseFrame(INTERNAL_ERROR if code == BAD_GATEWAY else code, reasonRaw)
        if by_peer and not self.failedByMe:
            self.relayed.closed_by_peer(self, code, reasonRaw)
        return stop

    def _fail_connection(self, code=GOING_AWAY, reason="going away") -> None:
        # Autobahn's one path for failing a connection (protocol error 1002, bad UTF-8
        # 1007, too big 1009): the other peer hears of it at once, not when TCP closes.
        already = self.failedByMe or self.state == STATE_CLOSED
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
        self.transport.write(frame_header(opcode, fin, length, mask) + payload)
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
        if self.state == STATE_OPEN:
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


class FrontendLeg(Leg, WebSocketServerProtocol):
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
        headers = tuple((name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in responseHeaders or ())
        relayed = self.relayed
        self.sendData(relayed.refusal(code, reason, headers).raw(relayed.clock.seconds()))


class BackendLeg(Leg, WebSocketClientProtocol):
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


class OneConnection:
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


class OneLeg(Factory):
    """
    The factory of one leg, built in advance: what L{WebSocketResource} takes the
    client's connection over with, and what the backend endpoint connects. Quiet: two
    log lines per socket would cost more than the socket.
    """

    noisy = False

    def __init__(self, leg: Leg) -> None:
        self._leg = leg

    def buildProtocol(self, addr) -> Leg:
        return self._leg


def leg_class(base: type, factory, **attributes) -> type:
    """
    A subclass of C{base} carrying C{factory}'s Autobahn options as class attributes, so
    that no leg copies them into its own dict (see L{Leg}), and C{attributes} (its log).
    """
    options = dict(attributes)
    for name in base.CONFIG_ATTRS:
        value = getattr(factory, name)
        options[name] = staticmethod(value) if callable(value) else value
    return type(base.__name__, (base,), options)
