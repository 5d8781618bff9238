"""
The proxy's twisted.web resource: route by Host, answer C{/api/health}, wake sleeping
agents with the 503 protocol, and stream everything else to the agent's backend.

Built on our own backend client (L{orchestrator.http.client}, a keep-alive pool per
agent) instead of L{twisted.web.proxy.ReverseProxyResource}, which buffers bodies,
forwards hop-by-hop headers and spoofable X-Forwarded-For, and errors when a client
disconnects.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from orchestrator.agents.routes import RouteTable
from orchestrator.config.model import ColdStart, ProxyConfig
from orchestrator.http.answers import (
    JAVASCRIPT,
    Answer,
    LocalAnswer,
    error_answer,
    json_answer,
    unavailable,
)
from orchestrator.http.bodies import StreamingBody
from orchestrator.http.client import BackendClients
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.http.headers import client_address, forwarded_request_headers, is_valid_host
from orchestrator.http.negotiation import prefer_wait, prefers_html
from orchestrator.http.targets import BadTarget, split_target
from orchestrator.http.throttle import ThrottledLog
from orchestrator.interfaces import IRequestHandler
from orchestrator.meters import NO_METER, ITrafficMeter
from orchestrator.policy.admission import Admission
from orchestrator.proxy.exchange import BackendExchange, Untracked
from orchestrator.proxy.frontdoor import BodyReads
from orchestrator.proxy.holding import HoldCounter, Waiter
from orchestrator.proxy.waiting import CLIENT_JS, WaitingPages
from orchestrator.relay.handshake import is_websocket_upgrade
from orchestrator.relay.upgrade import Upgrade, WebSocketRelay
from orchestrator.states import AgentState

HEALTH_PATH = b"/api/health"


CLIENT_JS_PATH = b"/api/client.js"


CLIENT_JS_ANSWER = Answer(200, CLIENT_JS, JAVASCRIPT, ((b"Cache-Control", b"max-age=300"),))


class ProxyResource(Resource):
    """
    The root (and only) resource of the proxy listener.
    """

    isLeaf = True

    def __init__(self, routes: RouteTable, config: ProxyConfig, *, clock,
                 clients: BackendClients | None = None, relay: WebSocketRelay | None = None,
                 held: HoldCounter | None = None, meter: ITrafficMeter = NO_METER) -> None:
        """
        The collaborators are built by the composition root (L{orchestrator.service});
        left out, each is the standard one on C{clock}, the HTTP client and the relay
        sharing their endpoints.

        @param clients: the backend client of each agent.
        @param relay: the WebSocket relay, for upgrade requests.
        @param held: the count of requests held while their agents wake.
        @param meter: told of each request answered (not of upgrades: the relay meters
            their frames).
        """
        super().__init__()
        if clients is None:
            clients = BackendClients(clock, BackendEndpoints(clock, config.connect_timeout),
                                     config.max_backend_connections,
                                     config.max_buffered_bytes // 2)
        self.routes = routes
        self.config = config
        self._clock = clock
        self._clients = clients
        self._relay = relay if relay is not None else WebSocketRelay(
            config, clock, clients.endpoints, meter)
        self.held = held if held is not None else HoldCounter(config.max_held_requests)
        self._meter = meter
        self._pages = WaitingPages()
        self._log = ThrottledLog(Logger(namespace="orchestrator.proxy.exchange"), clock)

    def reconfigure(self, config: ProxyConfig) -> None:
        """
        Take up changed proxy settings (a reload), everywhere they are used: new
        requests and sockets get them, those in flight keep theirs. Waiting-page
        templates are read again.
        """
        self.config = config
        self.held.max_total = config.max_held_requests
        self._clients.reconfigure(config.connect_timeout, config.max_backend_connections,
                                  config.max_buffered_bytes // 2)
        self._relay.reconfigure(config)
        self._pages.forget()

    def prepare(self, request, length=0):
        """
        The headers of a request with a body are in: decide its handler now, so the
        body streams to where it goes (the backend, or nowhere) as it arrives.
        """
        return self._handle(request, length).request_body

    def render(self, request):
        """
        The request is complete: its handler (decided now if it has no body) answers.
        """
        handler = request.handler
        if handler is None:
            handler = self._handle(request, 0)
        return handler.render(request)

    def _handle(self, request, length) -> IRequestHandler:
        """
        Decide the request's handler and store it on the request: the one place that does.
        """
        handler = request.handler = self._decide(request, length)
        if self._meter is not NO_METER and not isinstance(handler, Upgrade):
            request.notifyFinish().addBoth(self._finished, request, self._clock.seconds())
        return handler

    def _finished(self, result, request, started: float) -> None:
        # A client that left before its answer counts as 499 (nginx's "client closed").
        code = 499 if isinstance(result, Failure) else request.code
        self._meter.request_finished(getattr(request, "agent_name", None), request.method, code,
                                     self._clock.seconds() - started)

    def _answer(self, answer: Answer) -> LocalAnswer:
        return LocalAnswer(answer, self._clock)

    def _decide(self, request, length) -> IRequestHandler:
        host = _single_host(request)
        if isinstance(host, Answer):
            return self._answer(host)
        try:
            authority, uri = split_target(request.uri)
        except BadTarget as bad:
            return self._answer(error_answer(400, str(bad)))
        if authority is not None:
            # Absolute form (RFC 9112 section 3.2.2): its authority routes, and is the
            # Host the backend is told, whatever the Host header said.
            host = authority
        route = self.routes.route(host.decode("ascii"))
        if route is None:
            return self._answer(error_answer(
                404, f"no agent serves host {host.decode('ascii')!r}"))
        agent, backend = route.agent, route.target
        request.agent_name = agent.name
        path, _, query = uri.partition(b"?")
        if request.method in (b"GET", b"HEAD") and path.startswith(b"/api/"):
            if path == HEALTH_PATH:
                return self._health(request, agent, query)
            if path == CLIENT_JS_PATH:
                return self._answer(CLIENT_JS_ANSWER)
        user_agent = request.getHeader(b"user-agent") or b""
        ignored = agent.is_ignored(path.decode("latin-1"), user_agent.decode("latin-1"))
        admission = agent.admit(ignored)
        body = None
        if length != 0:
            channel = request.channel
            client = BodyReads(channel) if hasattr(channel, "pause_body") else channel.transport
            body = StreamingBody(client, length, self.config.max_buffered_bytes)
        if admission is Admission.FORWARD:
            return self._forward(request, agent, backend, host, uri, body, ignored)
        hold_for = self._hold_time(request, agent)
        if (hold_for and not ignored and agent.state is AgentState.STARTING
                and self.held.try_hold(agent.name, agent.config.cold_start.max_held)):
            return self._hold(request, agent, backend, host, uri, body, hold_for)
        return self._not_ready(request, agent)

    def _health(self, request, agent, query: bytes) -> IRequestHandler:
        """
        C{GET /api/health}: never wakes, never counts as activity; the body carries the
        state. With C{?wait=N}, answers as soon as the agent is ready or degraded.
        """
        try:
            wait = float(parse_qs(query).get(b"wait", [b"0"])[0])
        except ValueError:
            return self._answer(error_answer(400, "wait must be a number of seconds"))
        wait = min(wait, self.config.max_health_wait)
        if wait > 0 and math.isfinite(wait):
            return Waiter(agent, request, wait, self._clock,
                          lambda: self._answer(json_answer(200, agent.public_health())))
        return self._answer(json_answer(200, agent.public_health()))

    def _hold_time(self, request, agent) -> float | None:
        """
        How long to hold a request for a waking agent: the agent's hold mode, or the
        client's C{Prefer: wait=N}, never beyond the agent's C{hold_timeout}.
        """
        cold_start = agent.config.cold_start
        if cold_start.mode is ColdStart.HOLD:
            return cold_start.hold_timeout
        asked = prefer_wait(request.requestHeaders.getRawHeaders(b"prefer"))
        return min(asked, cold_start.hold_timeout) if asked else None

    def _hold(self, request, agent, backend, host: bytes, uri: bytes, body, hold_for: float):
        def decide():
            # Deciding never starts another wake.
            if agent.admission(ignored=False) is Admission.FORWARD:
                return self._forward(request, agent, backend, host, uri, body, ignored=False)
            if body is not None:
                body.stopProducing()  # read and drop the rest of the upload
            return self._not_ready(request, agent)

        return Waiter(agent, request, hold_for, self._clock, decide, body,
                      on_end=lambda: self.held.release(agent.name))

    def _not_ready(self, request, agent) -> LocalAnswer:
        """
        The 503 for an agent that is not ready: JSON, or the waiting page for a browser.
        """
        health, retry_after = agent.public_health(), self.config.retry_after
        page = None
        if prefers_html(request.getHeader(b"accept")):
            page = self._pages.page(agent.config.cold_start.page).render(health, retry_after)
        return self._answer(unavailable(health, retry_after, page))

    def _forward(self, request, agent, backend, host: bytes, uri: bytes, body, ignored: bool):
        """
        Relay the request to C{backend} (the agent's own, or a registered route's).
        """
        client = client_address(request, self.config.trusted_proxies)
        if body is None and is_websocket_upgrade(request.method, request.requestHeaders):
            return self._relay.relay(request, agent, backend, host, uri, ignored, client)
        address, trusted = client
        headers = forwarded_request_headers(
            request.requestHeaders,
            client_address=address,
            secure=request.isSecure(),
            host=host,
            trusted=trusted,
        )
        exchange = BackendExchange(
            Untracked(agent) if ignored else agent, request, body,
            client=self._clients.for_agent(agent), clock=self._clock,
            response_timeout=self.config.response_timeout, log=self._log,
            retry_after=self.config.retry_after)
        exchange.start(backend.url.encode("ascii") + uri, headers)
        return exchange


def _single_host(request) -> bytes | Answer:
    """
    The request's one valid Host value, or the 400 answer explaining why there is none.
    """
    values = request.requestHeaders.getRawHeaders(b"host")
    if not values:
        return error_answer(400, "missing Host header")
    if len(values) > 1:
        return error_answer(400, "more than one Host header")
    if not is_valid_host(values[0]):
        return error_answer(400, "invalid Host header")
    return values[0]
