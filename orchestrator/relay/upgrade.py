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

Autobahn's defaults suit a trusted network, not a public edge: L{orchestrator.relay.factories}
sets each of them. Its high-level message API would buffer whole messages and re-frame them, so the
legs use its frame hooks and write relayed frames themselves (L{orchestrator.relay.handshake.frame_header}).
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from autobahn.websocket.protocol import TrafficStats
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from orchestrator.config.model import ProxyConfig
from orchestrator.http.bodies import DiscardedBody
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.interfaces import IRequestHandler
from orchestrator.meters import NO_METER, ITrafficMeter
from orchestrator.relay.factories import RelayLegs
from orchestrator.relay.handshake import (
    VERSION,
    backend_handshake,
    origin_allowed,
    version_refused,
)
from orchestrator.relay.legs import OneLeg
from orchestrator.relay.socket import RelayedSocket


class WebSocketRelay:
    """
    The relay's shared parts, one per proxy listener: the proxy settings in force, the
    legs' factories, and the handler of each upgrade request.
    """

    def __init__(self, config: ProxyConfig, clock, endpoints: BackendEndpoints,
                 meter: ITrafficMeter = NO_METER) -> None:
        """
        @param endpoints: how backends are reached, the same as for the HTTP client.
        @param meter: told of each data frame relayed.
        """
        self._meter = meter
        self._config = config
        self._clock = clock
        self._endpoints = endpoints
        #: Autobahn's traffic counters, for all relayed sockets together.
        self.traffic = TrafficStats()
        self._legs = RelayLegs(config.websocket, clock, self.traffic)

    def reconfigure(self, config: ProxyConfig) -> None:
        """
        Take up changed proxy settings (a reload): new sockets get them, open sockets
        keep the ones they were opened with.
        """
        if config.websocket != self._config.websocket:
            self._legs = RelayLegs(config.websocket, self._clock, self.traffic)
        self._endpoints.set_connect_timeout(config.connect_timeout)
        self._config = config

    def relay(self, request, agent, backend, host: bytes, uri: bytes, ignored: bool,
              client: tuple[str, bool]) -> Upgrade:
        """
        The handler of an upgrade request the proxy would forward to C{agent}, at
        C{backend} (its own, or a registered route's).

        @param client: the client's address and whether it is a trusted proxy
            (L{orchestrator.http.headers.client_address}).
        """
        address, trusted = client
        handshake = backend_handshake(
            uri, request.requestHeaders, client_address=address, secure=request.isSecure(),
            host=host, trusted=trusted,
        )
        relayed = RelayedSocket(
            agent, handshake, tracked=not ignored, config=self._config, clock=self._clock,
            legs=self._legs, meter=self._meter,
            endpoint=self._endpoints.for_backend(backend, lambda: agent.down_addresses))
        return Upgrade(relayed)


@implementer(IRequestHandler)
class Upgrade:
    """
    The proxy's handler of one upgrade request: refuse it (origin, socket cap) as
    twisted.web, or take its connection over for its relayed socket.
    """

    def __init__(self, relayed: RelayedSocket) -> None:
        self._relayed = relayed
        # An upgrade has no body: the proxy relays only a GET without one.
        self.request_body = DiscardedBody()

    def render(self, request):
        relayed = self._relayed
        agent, limits = relayed.agent, relayed.agent.config.websocket
        if version_refused(request.requestHeaders):
            refusal = relayed.refusal(426, "unsupported WebSocket version (this proxy "
                                           "speaks 13, RFC 6455)",
                                      ((b"Sec-WebSocket-Version", VERSION),
                                       (b"Upgrade", b"websocket")))
            return refusal.apply(request, relayed.clock.seconds())
        if not origin_allowed(request.requestHeaders.getRawHeaders(b"origin"),
                              limits.allowed_origins):
            origin = (request.getHeader(b"origin") or b"").decode("latin-1")
            refusal = relayed.refusal(
                403, f"origin {origin!r} may not open WebSockets to agent {agent.name}")
            return refusal.apply(request, relayed.clock.seconds())
        if len(agent.connections) >= limits.max_connections:
            refusal = relayed.refusal(503, f"agent {agent.name} has {limits.max_connections} "
                                           "open WebSockets, the most allowed")
            return refusal.apply(request, relayed.clock.seconds())
        agent.connections.add(relayed)
        relayed.activity()
        frontend = relayed.open_frontend()
        channel = request.channel
        # From here on the connection is Autobahn's: twisted.web will not see it close, so
        # the Site must not wait for it at shutdown (the agent's registry does), and its
        # channel must stop being the transport's producer (the relay's flow control
        # registers its own).
        channel.transport.unregisterProducer()
        taken_over = getattr(channel, "taken_over", None)
        if taken_over is not None:  # the front door's channel: it stops counting it
            taken_over()
        WebSocketResource(OneLeg(frontend)).render(request)
        return NOT_DONE_YET
