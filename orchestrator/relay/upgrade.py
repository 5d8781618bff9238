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
legs use its frame hooks and write relayed frames themselves (L{orchestrator.relay.handshake.frame_header}).
"""

from __future__ import annotations

import json

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketServerFactory
from autobahn.websocket.protocol import TrafficStats
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.server import NOT_DONE_YET

from orchestrator.config.model import ProxyConfig
from orchestrator.http.headers import is_trusted
from orchestrator.relay.handshake import BackendHandshake, backend_handshake, origin_allowed
from orchestrator.relay.legs import BackendLeg, FrontendLeg, OneConnection, OneLeg, leg_class
from orchestrator.relay.socket import RelayedSocket


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
        self._frontend_class = leg_class(FrontendLeg, server)
        self._backend_class = leg_class(BackendLeg, client)

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
        leg.factory = OneConnection(self._client_factory, list(relayed.handshake.protocols))
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
        WebSocketResource(OneLeg(frontend)).render(request)
        return NOT_DONE_YET


def _answer(request, code: int, body: dict, retry_after: int | None = None) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    if retry_after is not None:
        request.setHeader(b"Retry-After", str(retry_after).encode("ascii"))
    return json.dumps(body).encode("utf-8")
