"""
The proxy's twisted.web resource: route by Host, answer C{/api/health}, wake sleeping
agents with the 503 protocol, and stream everything else to the agent's backend.

Built on our own backend client (L{orchestrator.backend}, a keep-alive pool per agent)
instead of L{twisted.web.proxy.ReverseProxyResource}, which buffers bodies, forwards
hop-by-hop headers and spoofable X-Forwarded-For, and errors when a client disconnects.
"""

from __future__ import annotations

import json
import math
from urllib.parse import parse_qs, urlsplit
from weakref import WeakKeyDictionary

from twisted.internet import error as net
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss, datetimeToString
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from orchestrator.backend import BackendClient, BadResponse
from orchestrator.coldstart import (
    CLIENT_JS,
    HoldCounter,
    Waiter,
    WaitingPage,
    prefer_wait,
    prefers_html,
)
from orchestrator.config import ColdStart, ProxyConfig
from orchestrator.headers import (
    forwarded_request_headers,
    is_trusted,
    is_valid_host,
    strip_hop_by_hop,
)
from orchestrator.policies import Admission
from orchestrator.probe import describe_connection_error
from orchestrator.routes import RouteTable
from orchestrator.states import AgentState
from orchestrator.websocket import WebSocketRelay, is_websocket_upgrade

log = Logger()

HEALTH_PATH = b"/api/health"
CLIENT_JS_PATH = b"/api/client.js"
#: Request body bytes buffered while the backend is not taking them, before the client
#: is paused.
BODY_BUFFER_LIMIT = 64 * 1024


def json_answer(request, code: int, body: dict, headers: dict[bytes, bytes] | None = None) -> bytes:
    """
    Set up a JSON response on C{request} and return its body.
    """
    request.setResponseCode(code)
    request.setHeader(b"Date", datetimeToString())
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return json.dumps(body).encode("utf-8")


class _LocalAnswer:
    """
    A response decided without the backend (an error, a 503, the health body, a page).
    """

    def __init__(self, code: int, body: dict | bytes, headers: dict[bytes, bytes] | None = None,
                 content_type: bytes = b"application/json") -> None:
        self.code = code
        self.body = body
        self.headers = headers
        self.content_type = content_type

    def render(self, request):
        if isinstance(self.body, dict):
            return json_answer(request, self.code, self.body, self.headers)
        request.setResponseCode(self.code)
        request.setHeader(b"Date", datetimeToString())
        request.setHeader(b"Content-Type", self.content_type)
        for name, value in (self.headers or {}).items():
            request.setHeader(name, value)
        return self.body


class _RequestContent:
    """
    What twisted.web needs of C{request.content} besides C{write}: it asks for the
    length and rewinds, but never reads a body the proxy streams or drops.
    """

    received = 0

    def tell(self) -> int:
        return self.received

    def seek(self, *args) -> None:
        pass

    def read(self, *args) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _DiscardedBody(_RequestContent):
    """
    Where the body of a request answered locally goes: counted, not kept.
    """

    def write(self, data: bytes) -> None:
        self.received += len(data)


@implementer(IBodyProducer)
class StreamingBody(_RequestContent):
    """
    A request body relayed as it arrives: twisted.web writes into it (it stands in for
    C{request.content}) and the backend connection consumes it. When the backend cannot
    keep up, the client's socket is paused: memory stays bounded for any body size.
    """

    def __init__(self, request, length) -> None:
        self.length = UNKNOWN_LENGTH if length is None else length
        self._client = request.channel.transport
        self._consumer = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._backend_paused = False
        self._client_paused = False
        self._stopped = False
        self._done: Deferred | None = None
        self.received = 0

    # The file-like side, written by twisted.web.

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self._stopped:
            return
        if self._consumer is not None and not self._backend_paused and not self._buffer:
            self._consumer.write(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_BUFFER_LIMIT:
            self._pause_client()

    def complete(self) -> None:
        """
        The whole body has arrived.
        """
        self._complete = True
        self._flush()

    # The IBodyProducer side, driven by the backend connection.

    def startProducing(self, consumer) -> Deferred:
        self._consumer = consumer
        self._done = Deferred()
        self._flush()
        return self._done

    def pauseProducing(self) -> None:
        self._backend_paused = True
        self._pause_client()

    def resumeProducing(self) -> None:
        self._backend_paused = False
        self._flush()

    def stopProducing(self) -> None:
        self._stopped = True
        self._buffer = []
        self._resume_client()

    def _flush(self) -> None:
        if self._consumer is None or self._stopped:
            return
        while self._buffer and not self._backend_paused:
            chunk = self._buffer.pop(0)
            self._buffered -= len(chunk)
            self._consumer.write(chunk)
        if not self._buffer and not self._backend_paused:
            self._resume_client()
            if self._complete and self._done is not None and not self._done.called:
                self._done.callback(None)

    def _pause_client(self) -> None:
        if not self._client_paused and self._client is not None:
            self._client_paused = True
            self._client.pauseProducing()

    def _resume_client(self) -> None:
        if self._client_paused:
            self._client_paused = False
            self._client.resumeProducing()


class _ResponseRelay(Protocol):
    """
    Writes a backend response body to the client as it arrives; the backend connection
    is registered as the client's producer, so a slow client slows the backend down.
    """

    def __init__(self, exchange: BackendExchange) -> None:
        self._exchange = exchange

    def connectionMade(self) -> None:
        self._exchange.body_transport = self.transport
        if not self._exchange.client_gone:
            self._exchange.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if not self._exchange.client_gone:
            self._exchange.request.write(data)

    def connectionLost(self, reason: Failure) -> None:
        self._exchange.response_body_done(reason)


class BackendExchange:
    """
    One request relayed to one backend, from the request headers to the last body byte.
    """

    def __init__(self, resource: ProxyResource, agent, request, body: StreamingBody | None) -> None:
        self.resource = resource
        self.agent = agent
        self.request = request
        self.body = body
        self.client_gone = False
        self.body_transport = None
        self._response = None
        self._client_ready = body is None
        self._waiting: Deferred | None = None
        self._timeout = None
        self._finished = False
        agent.request_started()
        request.notifyFinish().addBoth(self._client_finished)

    def start(self, uri: bytes, headers) -> None:
        client = self.resource.http_client(self.agent)
        url = self.agent.config.backend.url.encode("ascii") + uri
        self._waiting = client.request(self.request.method, url, headers, self.body)
        self._waiting.addCallbacks(self._got_response, self._failed)
        if self._client_ready:
            self._arm_timeout()

    def client_complete(self) -> None:
        """
        The client's request (headers and body) is complete: the response may be written.
        """
        self._client_ready = True
        if self.body is not None:
            self.body.complete()
        if self._response is not None:
            self._relay(self._response)
        elif self._waiting is not None:
            self._arm_timeout()

    def _arm_timeout(self) -> None:
        # Counted from the end of the request body, so a long upload is not a slow backend.
        if self._timeout is not None:
            return
        timeout = self.resource.config.response_timeout
        self._timeout = self.resource.reactor.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timeout = None
        if self._waiting is not None:
            self._waiting.cancel()

    def _got_response(self, response) -> None:
        self._waiting = None
        self._cancel_timeout()
        if self.client_gone:
            response.deliverBody(_Discard())
            return
        if self._client_ready:
            self._relay(response)
        else:
            # The backend answered before the upload ended: hold the answer (its
            # connection is not read meanwhile) until twisted.web may respond.
            self._response = response

    def _relay(self, response) -> None:
        self._response = None
        request = self.request
        request.setResponseCode(response.code, response.phrase)
        strip_hop_by_hop(response.headers, into=request.responseHeaders)
        cold_start = self.agent.take_cold_start()
        if cold_start is not None:
            request.responseHeaders.setRawHeaders(b"X-Cold-Start", [b"%d" % cold_start])
        length = _content_length(request.method, response)
        if length is not None:
            request.responseHeaders.setRawHeaders(b"Content-Length", [length])
        response.deliverBody(_ResponseRelay(self))

    def response_body_done(self, reason: Failure) -> None:
        request = self.request
        if self.client_gone:
            return
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            self._finish()
        else:
            # Headers are gone already: the only honest signal left is a cut connection.
            log.info("backend of {agent} failed mid-response: {reason}",
                     agent=self.agent.name, reason=describe_connection_error(reason.value))
            request.channel.transport.abortConnection()

    def _failed(self, failure: Failure) -> None:
        self._waiting = None
        self._cancel_timeout()
        if self.client_gone:
            return
        name = self.agent.name
        if failure.check(CancelledError):
            code, message = 504, (f"agent {name} did not answer within "
                                  f"{self.resource.config.response_timeout:g}s")
        elif _is_timeout(failure):
            code, message = 504, f"agent {name} did not accept a connection in time"
        elif (bad := _bad_response(failure)) is not None:
            code, message = 502, f"agent {name} sent an invalid HTTP response: {bad}"
        else:
            code, message = 502, f"agent {name} is unreachable: {describe_connection_error(failure.value)}"
        body = {"error": message, **self.agent.health()}
        if self.body is not None:
            # Whatever of the upload is still coming is read and dropped, not held.
            self.body.stopProducing()
        if self._client_ready:
            self._answer_locally(code, body)
        else:
            self._response = _LocalAnswer(code, body)

    def _answer_locally(self, code: int, body: dict) -> None:
        payload = json_answer(self.request, code, body)
        self.request.write(payload)
        self._finish()

    def _finish(self) -> None:
        if not self._finished and not self.client_gone:
            self._finished = True
            self.request.finish()

    def _client_finished(self, result) -> None:
        if isinstance(result, Failure):
            # The client went away: cancel whatever is still going to the backend. An
            # ordinary disconnect is not an error and is not logged as one.
            self.client_gone = True
            self._cancel_timeout()
            if self._waiting is not None:
                self._waiting.cancel()
            if self.body_transport is not None:
                self.body_transport.stopProducing()
            if self.body is not None:
                self.body.stopProducing()
        self.agent.request_finished()

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def render(self, request):
        """
        Called once the client's request is complete: relay the response (or the error)
        that may have arrived before the body ended, or wait for it.
        """
        pending = self._response
        if isinstance(pending, _LocalAnswer):
            self._response = None
            payload = pending.render(request)
            request.write(payload)
            self._finish()
        else:
            self.client_complete()
        return NOT_DONE_YET


def _content_length(method: bytes, response) -> bytes | None:
    """
    The Content-Length to send the client: the backend's body length, except where
    HTTP forbids or redefines it (HEAD announces the GET length; 204 and 304 have none).
    """
    if response.code in (204, 304) or method == b"HEAD":
        return (response.headers.getRawHeaders(b"content-length") or [None])[0] if response.code != 204 else None
    if response.length is UNKNOWN_LENGTH:
        return None
    return b"%d" % response.length


def _bad_response(failure: Failure) -> BadResponse | None:
    """
    The protocol error of a backend that broke HTTP, if that is why the request failed.
    """
    if failure.check(ResponseFailed):
        for reason in failure.value.reasons:
            if reason.check(BadResponse):
                return reason.value
    return None


def _is_timeout(failure: Failure) -> bool:
    if failure.check(net.TimeoutError, net.TCPTimedOutError):
        return True
    if failure.check(ResponseFailed):
        return any(r.check(net.TimeoutError) for r in failure.value.reasons)
    return False


class _Discard(Protocol):
    """
    Takes a response nobody will read and closes its connection.
    """

    def connectionMade(self) -> None:
        self.transport.stopProducing()

    def connectionLost(self, reason) -> None:
        pass


class ProxyResource(Resource):
    """
    The root (and only) resource of the proxy listener.
    """

    isLeaf = True

    def __init__(self, routes: RouteTable, config: ProxyConfig, reactor, http_client=None) -> None:
        """
        @param http_client: C{agent -> IAgent} for the backend requests; by default a
            L{orchestrator.backend.BackendClient} on the agent's keep-alive pool.
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
        return getattr(handler, "body", None) or _DiscardedBody()

    def render(self, request):
        if request.handler is None:
            request.handler = self._decide(request, 0)
        return request.handler.render(request)

    def _decide(self, request, length):
        host = _single_host(request)
        if isinstance(host, _LocalAnswer):
            return host
        uri = request.uri
        if not uri.startswith(b"/"):
            # Absolute-form (RFC 9112 section 3.2.2): its authority is the host.
            parts = urlsplit(uri)
            if not parts.scheme or not parts.netloc:
                return _LocalAnswer(400, {"error": "the request target must be a path"})
            host = parts.netloc
            uri = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
        agent = self.routes.match(host.decode("ascii"))
        if agent is None:
            return _LocalAnswer(404, {"error": f"no agent serves host {host.decode('ascii')!r}"})
        path, _, query = uri.partition(b"?")
        if request.method in (b"GET", b"HEAD") and path.startswith(b"/api/"):
            if path == HEALTH_PATH:
                return self._health(request, agent, query)
            if path == CLIENT_JS_PATH:
                return _LocalAnswer(200, CLIENT_JS, {b"Cache-Control": b"max-age=300"},
                                    content_type=b"text/javascript; charset=utf-8")
        user_agent = request.getHeader(b"user-agent") or b""
        ignored = agent.is_ignored(path.decode("latin-1"), user_agent.decode("latin-1"))
        admission = agent.admit(ignored)
        body = StreamingBody(request, length) if length != 0 else None
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
            return _LocalAnswer(400, {"error": "wait must be a number of seconds"})
        wait = min(wait, self.config.max_health_wait)
        if wait > 0 and math.isfinite(wait):
            return Waiter(agent, request, wait, self.reactor,
                          lambda: _LocalAnswer(200, agent.health()))
        return _LocalAnswer(200, agent.health())

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

    def _not_ready(self, request, agent) -> _LocalAnswer:
        """
        The 503 for an agent that is not ready: JSON, or the waiting page for a browser.
        """
        health = agent.health()
        headers = {b"Retry-After": self._retry_after, b"Cache-Control": b"no-store"}
        if prefers_html(request.getHeader(b"accept")):
            page = self._page(agent).render(health, self.config.retry_after)
            return _LocalAnswer(503, page, headers, content_type=b"text/html; charset=utf-8")
        return _LocalAnswer(503, health, headers)

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
        exchange = BackendExchange(self, _Untracked(agent) if ignored else agent, request, body)
        exchange.start(uri, headers)
        return exchange


class _Untracked:
    """
    An agent seen through a request that must not count as activity (an uptime monitor).
    """

    def __init__(self, agent) -> None:
        self._agent = agent

    def __getattr__(self, name):
        return getattr(self._agent, name)

    def request_started(self) -> None:
        pass

    def request_finished(self) -> None:
        pass


def _single_host(request):
    """
    The request's one valid Host value, or the 400 answer explaining why there is none.
    """
    values = request.requestHeaders.getRawHeaders(b"host")
    if not values:
        return _LocalAnswer(400, {"error": "missing Host header"})
    if len(values) > 1:
        return _LocalAnswer(400, {"error": "more than one Host header"})
    if not is_valid_host(values[0]):
        return _LocalAnswer(400, {"error": "invalid Host header"})
    return values[0]

