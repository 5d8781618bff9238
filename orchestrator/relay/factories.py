"""
Autobahn's factories set up for a public edge, and the legs of relayed sockets made
from them.

Autobahn's defaults suit a trusted network, not a public edge (no size limits, any origin,
failing a connection by dropping it without a close frame); the factories below set each
of them. Its timers run on the injected clock, not txaio's global reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.relay.socket import RelayedSocket

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketServerFactory
from autobahn.websocket.protocol import TrafficStats
from twisted.logger import Logger

from orchestrator.config.model import ProxyWebSocketConfig
from orchestrator.flows import cancel_call
from orchestrator.http.throttle import QuietDebug, ThrottledLog
from orchestrator.relay.legs import BackendLeg, FrontendLeg, OneConnection, leg_class


class _ClockTimer:
    """
    Autobahn's timer interface on the injected clock (it would use txaio's global one).
    """

    def __init__(self, clock) -> None:
        self._clock = clock

    def call_later(self, delay, function, *args, **kwargs):
        return _Cancellable(self._clock.callLater(delay, function, *args, **kwargs))


class _Cancellable:
    """
    A delayed call that may be cancelled after it ran, as Autobahn sometimes does.
    """

    __slots__ = ("_call",)

    def __init__(self, call) -> None:
        self._call = call

    def cancel(self) -> None:
        cancel_call(self._call)


class RelayLegs:
    """
    Makes the two legs of a relayed socket: Autobahn's server side for the client, its
    client side for the agent, both with the relay's timers and limits; and holds what
    all relayed sockets share: the traffic counters and the logs.
    """

    def __init__(self, timers: ProxyWebSocketConfig, clock, traffic: TrafficStats) -> None:
        """
        @param traffic: Autobahn's traffic counters, shared by every relayed socket.
        """
        self.traffic = traffic
        #: The relay's own events (a refused handshake), which clients can repeat.
        self.log = ThrottledLog(Logger(namespace="orchestrator.relay"), clock)
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
        server = WebSocketServerFactory(server="", reactor=clock)
        server.setProtocolOptions(versions=[13], webStatus=False, requireMaskedClientFrames=True,
                                  maskServerFrames=False, maxConnections=0, **common)
        client = WebSocketClientFactory(useragent=None, reactor=clock)
        # The relay bounds the wait for the agent to drop TCP after a close itself.
        client.setProtocolOptions(maskClientFrames=True, acceptMaskedServerFrames=False,
                                  serverConnectionDropTimeout=0, **common)
        server._batched_timer = client._batched_timer = _ClockTimer(clock)
        self._server_factory = server
        self._client_factory = client
        # Autobahn logs at info and warn for what any peer can repeat (a malformed
        # handshake, an invalid frame, a dropped connection): throttled for the legs.
        autobahn_log = QuietDebug(Logger(namespace="autobahn.websocket"), clock)
        self._frontend_class = leg_class(FrontendLeg, server, log=autobahn_log)
        self._backend_class = leg_class(BackendLeg, client, log=autobahn_log)

    def frontend(self, relayed: RelayedSocket) -> FrontendLeg:
        """
        The client's leg of C{relayed}, for the connection taken from twisted.web.
        """
        leg = self._frontend_class()
        leg.factory = self._server_factory
        leg.relayed = relayed
        leg.maxMessagePayloadSize = relayed.agent.config.websocket.max_message_size
        return leg

    def backend(self, relayed: RelayedSocket) -> BackendLeg:
        """
        The agent's leg of C{relayed}, offering the subprotocols its client offered.
        """
        leg = self._backend_class()
        leg.factory = OneConnection(self._client_factory, list(relayed.handshake.protocols))
        leg.relayed = relayed
        leg.maxMessagePayloadSize = relayed.agent.config.websocket.max_message_size
        return leg
