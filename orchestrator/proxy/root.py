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
from urllib.parse import parse_qs, urlsplit
from weakref import WeakKeyDictionary

from twisted.web.resource import Resource

from orchestrator.agents.routes import RouteTable
from orchestrator.config.model import ColdStart, ProxyConfig
from orchestrator.http.answers import LocalAnswer
from orchestrator.http.bodies import DiscardedBody, StreamingBody
from orchestrator.http.client import BackendClient
from orchestrator.http.headers import forwarded_request_headers, is_trusted, is_valid_host
from orchestrator.http.negotiation import prefer_wait, prefers_html
from orchestrator.policy.admission import Admission
from orchestrator.proxy.exchange import BackendExchange, Untracked
from orchestrator.proxy.holding import HoldCounter, Waiter
from orchestrator.proxy.waiting import CLIENT_JS, WaitingPage
from orchestrator.relay.handshake import is_websocket_upgrade
from orchestrator.relay.upgrade import WebSocketRelay
from orchestrator.states import AgentState

HEALTH_PATH = b"/api/health"


CLIENT_JS_PATH = b"/api/client.js"


class ProxyResource(Resource):
    """
    The root (and only) resource of the proxy listener.
    """

    isLeaf = True

    def __init__(self, routes: RouteTable, config: ProxyConfig, reactor, http_client=None) -> None:
        """
        @param http_client: C{agent -> IAgent} for the backend requests; by default a
            L{orchestrator.http.client.BackendClient} on the agent's keep-alive pool.
        """
        super().__init__()
        self.routes = routes
        self.config = config
        self.reactor = reactor
        self.http_client = http_client or self._pooled_client
        self.held = HoldCounter(config.max_held_requests)
        # One client per agent, reused: building one per request showed in the profile.
        self._clients: WeakKeyDictionary = WeakKeyDictionary()
        self.websockets = WebSocketRelay(config, reactor)
        self._pages: dict[str, WaitingPage] = {}
        self._retry_after = str(config.retry_after).encode("ascii")

    def reconfigure(self, config: ProxyConfig) -> None:
        """
        Take up changed proxy settings (a reload); requests in flight keep theirs.
        """
        self.config = config
        self._retry_after = str(config.retry_after).encode("ascii")
        self.held.max_total = config.max_held_requests
        self._clients.clear()  # the connect timeout may have changed

    def _pooled_client(self, agent):
        client = self._clients.get(agent)
        if client is None:
            client = self._clients[agent] = BackendClient(
                self.reactor, agent.pool, self.config.connect_timeout)
        return client

    def prepare(self, request, length=0):
        """
        Decide what to do with a request once its headers are in. Returns where its body
        goes: to the backend as it arrives, or nowhere.
        """
        handler = request.handler = self._decide(request, length)
        return getattr(handler, "body", None) or DiscardedBody()

    def render(self, request):
        if request.handler is None:
            request.handler = self._decide(request, 0)
        return request.handler.render(request)

    def _decide(self, request, length):
        host = _single_host(request)
        if isinstance(host, LocalAnswer):
            return host
        uri = request.uri
        if not uri.startswith(b"/"):
            # Absolute-form (RFC 9112 section 3.2.2): its authority is the host.
            parts = urlsplit(uri)
            if not parts.scheme or not parts.netloc:
                return LocalAnswer(400, {"error": "the request target must be a path"})
            host = parts.netloc
            uri = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
        agent = self.routes.match(host.decode("ascii"))
        if agent is None:
            return LocalAnswer(404, {"error": f"no agent serves host {host.decode('ascii')!r}"})
        path, _, query = uri.partition(b"?")
        if request.method in (b"GET", b"HEAD") and path.startswith(b"/api/"):
            if path == HEALTH_PATH:
                return self._health(request, agent, query)
            if path == CLIENT_JS_PATH:
                return LocalAnswer(200, CLIENT_JS, {b"Cache-Control": b"max-age=300"},
                                    content_type=b"text/javascript; charset=utf-8")
        user_agent = request.getHeader(b"user-agent") or b""
        ignored = agent.is_ignored(path.decode("latin-1"), user_agent.decode("latin-1"))
        admission = agent.admit(ignored)
        body = StreamingBody(request.channel.transport, length) if length != 0 else None
        if admission is Admission.FORWARD:
            return self._forward(request, agent, host, uri, body, ignored)
        hold_for = self._hold_time(request, agent)
        if (hold_for and not ignored and agent.state is AgentState.STARTING
                and self.held.try_hold(agent.name, agent.config.cold_start.max_held)):
            return self._hold(request, agent, host, uri, body, hold_for)
        return self._not_ready(request, agent)

    def _health(self, request, agent, query: bytes):
        """
        C{GET /api/health}: never wakes, never counts as activity; the body carries the
        state. With C{?wait=N}, answers as soon as the agent is ready or degraded.
        """
        try:
            wait = float(parse_qs(query).get(b"wait", [b"0"])[0])
        except ValueError:
            return LocalAnswer(400, {"error": "wait must be a number of seconds"})
        wait = min(wait, self.config.max_health_wait)
        if wait > 0 and math.isfinite(wait):
            return Waiter(agent, request, wait, self.reactor,
                          lambda: LocalAnswer(200, agent.health()))
        return LocalAnswer(200, agent.health())

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

    def _hold(self, request, agent, host: bytes, uri: bytes, body, hold_for: float):
        def decide():
            self.held.release(agent.name)
            # Asked as an ignored request would be: deciding never starts another wake.
            if agent.admit(ignored=True) is Admission.FORWARD:
                return self._forward(request, agent, host, uri, body, ignored=False)
            if body is not None:
                body.stopProducing()  # read and drop the rest of the upload
            return self._not_ready(request, agent)

        return Waiter(agent, request, hold_for, self.reactor, decide, body)

    def _not_ready(self, request, agent) -> LocalAnswer:
        """
        The 503 for an agent that is not ready: JSON, or the waiting page for a browser.
        """
        health = agent.health()
        headers = {b"Retry-After": self._retry_after, b"Cache-Control": b"no-store"}
        if prefers_html(request.getHeader(b"accept")):
            page = self._page(agent).render(health, self.config.retry_after)
            return LocalAnswer(503, page, headers, content_type=b"text/html; charset=utf-8")
        return LocalAnswer(503, health, headers)

    def _page(self, agent) -> WaitingPage:
        page = self._pages.get(agent.name)
        if page is None:
            path = agent.config.cold_start.page
            if path is None:
                page = WaitingPage()
            else:
                with open(path, encoding="utf-8") as template:
                    page = WaitingPage(template.read())
            self._pages[agent.name] = page
        return page

    def _forward(self, request, agent, host: bytes, uri: bytes, body, ignored: bool):
        if body is None and is_websocket_upgrade(request.method, request.requestHeaders):
            return self.websockets.relay(request, agent, host, uri, ignored)
        client = request.getClientAddress()
        address = getattr(client, "host", "") or "unknown"
        headers = forwarded_request_headers(
            request.requestHeaders,
            client_address=address,
            secure=request.isSecure(),
            host=host,
            trusted=is_trusted(address, self.config.trusted_proxies),
        )
        exchange = BackendExchange(self, Untracked(agent) if ignored else agent, request, body)
        exchange.start(uri, headers)
        return exchange


def _single_host(request):
    """
    The request's one valid Host value, or the 400 answer explaining why there is none.
    """
    values = request.requestHeaders.getRawHeaders(b"host")
    if not values:
        return LocalAnswer(400, {"error": "missing Host header"})
    if len(values) > 1:
        return LocalAnswer(400, {"error": "more than one Host header"})
    if not is_valid_host(values[0]):
        return LocalAnswer(400, {"error": "invalid Host header"})
    return values[0]
