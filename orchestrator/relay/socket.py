"""
One client WebSocket relayed to one agent, from the upgrade request to the last close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.config.model import ProxyConfig
    from orchestrator.relay.factories import RelayLegs

from autobahn.websocket.types import ConnectionDeny
from twisted.internet import error as net
from twisted.internet.defer import CancelledError, Deferred
from zope.interface import implementer

from orchestrator.agents.drain import IDrainable
from orchestrator.flows import cancel_call
from orchestrator.http.answers import Answer, error_answer
from orchestrator.http.errors import describe_connection_error
from orchestrator.meters import NO_METER, TO_AGENT, TO_CLIENT, ITrafficMeter
from orchestrator.relay.handshake import (
    BAD_GATEWAY,
    GOING_AWAY,
    INTERNAL_ERROR,
    BackendHandshake,
    close_reason,
)
from orchestrator.relay.legs import (
    STATE_CONNECTING,
    BackendLeg,
    FrontendLeg,
    Leg,
    OneLeg,
    ReadPause,
)


def _no_activity() -> None:
    pass


@implementer(IDrainable)
class RelayedSocket:
    """
    One client WebSocket relayed to one agent: its two legs from the upgrade request to
    the last close. Registered in C{agent.connections} from the takeover until both TCP
    connections are closed, so that the agent's sleep and the shutdown drain it.

    @ivar last_frame: when the last data frame began, either way (C{None} before the
        first): the admin API's "sockets with recent frames".
    @ivar activity: called for every data frame: the agent's C{frame_relayed}, unless the
        upgrade was a request that does not count (an uptime monitor's).
    """

    __slots__ = (
        "agent", "handshake", "activity", "frontend", "backend", "clock", "last_frame",
        "_meter", "_config",
        "_legs", "_endpoint", "_connecting", "_opening", "_handshake_timer", "_deadlines",
        "_done",
    )

    def __init__(self, agent, handshake: BackendHandshake, *, tracked: bool,
                 config: ProxyConfig, clock, legs: RelayLegs, endpoint,
                 meter: ITrafficMeter = NO_METER) -> None:
        """
        @param tracked: whether the socket's data frames count as the agent's activity.
        @param meter: told of each data frame relayed, and which way.
        @param config: the proxy settings in force when the upgrade came: its timers and
            C{Retry-After} stay those for the socket's life.
        @param legs: makes the socket's two Autobahn legs.
        @param endpoint: the agent's backend (an L{IStreamClientEndpoint}).
        """
        self.agent = agent
        self.handshake = handshake
        self.activity = agent.frame_relayed if tracked else _no_activity
        self._config = config
        self.clock = clock
        self.last_frame: float | None = None
        self._meter = meter
        self._legs = legs
        self._endpoint = endpoint
        self.frontend: FrontendLeg | None = None
        self.backend: BackendLeg | None = None
        self._connecting = None
        self._opening = None
        self._handshake_timer = None
        self._deadlines = None
        self._done = False

    def frame_began(self, leg: Leg) -> None:
        """
        A data frame began on C{leg} (an open socket): activity, and it is metered.
        """
        self.last_frame = self.clock.seconds()
        self.activity()
        self._meter.frame_relayed(self.agent.name,
                                  TO_AGENT if leg is self.frontend else TO_CLIENT)

    def refusal(self, code: int, message: str,
                headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
        """
        The answer to a refused handshake, as the HTTP proxy's errors read: the error
        and the agent's state; a 503 says when to try again.
        """
        if code == 503:
            headers = (*headers, (b"Retry-After", b"%d" % self._config.retry_after))
        return error_answer(code, message, headers, **self.agent.public_health())

    # Opening ----------------------------------------------------------------------------

    def open_frontend(self) -> FrontendLeg:
        """
        The client's leg, for the connection the relay takes over from twisted.web.
        """
        self.frontend = self._legs.frontend(self)
        return self.frontend

    def connect_backend(self) -> Deferred:
        """
        Connect to the agent and start its handshake. The Deferred returned (to Autobahn,
        from the client's C{onConnect}) fires with the subprotocol the agent chose and the
        headers of its answer, which the client then gets, or fails with the refusal the
        client gets.
        """
        self._opening = Deferred()
        self._handshake_timer = self.clock.callLater(
            self._config.websocket.handshake_timeout, self._handshake_too_slow)
        self.backend = self._legs.backend(self)
        self._connecting = self._endpoint.connect(OneLeg(self.backend))
        self._connecting.addCallbacks(self._backend_connected, self._backend_unreachable)
        return self._opening

    def _backend_connected(self, protocol) -> None:
        self._connecting = None
        # The client's transport holds at most half of max_buffered_bytes (the front
        # door set it); so does the agent's, and one read of either adds at most that.
        if protocol.transport is not None:
            protocol.transport.bufferSize = self._config.max_buffered_bytes // 2

    def _backend_unreachable(self, failure) -> None:
        self._connecting = None
        self.backend = None
        # Cancelled on purpose (the handshake timed out, the client left): the refusal,
        # if any, is already sent. A direct TCP endpoint says so with its own error.
        if not failure.check(CancelledError, net.ConnectingCancelledError):
            name = self.agent.name
            if failure.check(net.TimeoutError, net.TCPTimedOutError):
                self._refuse(504, f"agent {name} did not accept a connection in time")
            else:
                reason = describe_connection_error(failure.value)
                self._refuse(502, f"agent {name} is unreachable: {reason}")
        self._check_done()

    def _handshake_too_slow(self) -> None:
        self._handshake_timer = None
        timeout = self._config.websocket.handshake_timeout
        self._refuse(504, f"agent {self.agent.name} did not complete the WebSocket "
                          f"handshake within {timeout:g}s")

    def backend_open(self, subprotocol: str | None, headers: dict[str, list[str]]) -> None:
        """
        The agent accepted the handshake: accept the client's, with the same subprotocol
        and the agent's end-to-end headers (its cookies, say).
        """
        self._cancel_handshake_timer()
        frontend = self.frontend
        if frontend is None or frontend.lost or frontend.state != STATE_CONNECTING:
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
        frontend.transport.registerProducer(ReadPause(backend.transport), True)
        backend.transport.registerProducer(ReadPause(frontend.transport), True)
        frontend.settle(self._legs.traffic)
        backend.settle(self._legs.traffic)
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
        if frontend is not None and not frontend.lost and frontend.state == STATE_CONNECTING:
            self._legs.log.info("WebSocket to {agent} refused ({code}): {reason}",
                                agent=self.agent.name, code=code, reason=message,
                                event="websocket.refused", throttle_key=self.agent.name)
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
        self._handshake_timer = cancel_call(self._handshake_timer)

    # Closing ----------------------------------------------------------------------------

    def closed_by_peer(self, leg: Leg, code: int | None, reason: bytes | None) -> None:
        """
        A peer sent a close: the other peer gets the same code and reason.
        """
        if leg.other is not None:
            leg.other.close_with(code, reason)

    def failed(self, leg: Leg, code: int, reason: str) -> None:
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
            other.close_with(GOING_AWAY, close_reason(f"client connection failed ({code})"))
        else:
            other.close_with(BAD_GATEWAY, close_reason(f"agent connection failed ({code}: {reason})"))

    def lost(self, leg: Leg) -> None:
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
            deadline = self.clock.callLater(self._config.websocket.ping_timeout, other.abort)
            self._deadlines = (self._deadlines or ()) + (deadline,)
        self._check_done()

    def cut_later(self, leg: Leg) -> None:
        """
        C{leg} is closing after its last frame: cut it if its peer has not taken that
        frame within C{ping_timeout} (a peer that never reads would hold it forever).
        """
        deadline = self.clock.callLater(self._config.websocket.ping_timeout, leg.abort)
        self._deadlines = (self._deadlines or ()) + (deadline,)

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
            cancel_call(deadline)
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
