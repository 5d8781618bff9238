"""
The admin listener: a Klein app (routes, a bearer token, JSON everywhere) for the
operators and their tools, on its own port (never exposed with the proxy's).

  - C{GET /healthz}: the orchestrator itself is up (no token: health checks reach it);
  - C{GET /api/agents}, C{GET /api/agents/NAME}: the agents, why each is awake, when it
    will sleep, its recent wakes;
  - C{POST /api/agents/NAME/wake}, C{POST /api/agents/NAME/sleep}, each with
    C{?wait=N} to answer once the agent got there;
  - C{GET /api/events}: the event bus as server-sent events (L{orchestrator.admin.stream}),
    or the buffered events as JSON;
  - C{GET /api/config}: the running configuration, secrets redacted;
  - C{GET /metrics}: Prometheus metrics;
  - C{/}: the dashboard (static files; it asks for the token itself).

Every error is a JSON body C{{"error": ...}} naming the problem, made in one place
(L{AdminApp._error}); no traceback ever reaches a client.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException

from orchestrator.admin.redact import running_configuration
from orchestrator.admin.stream import EventStream, TooManySubscribers, parse_event_id
from orchestrator.admin.views import agent_view
from orchestrator.agents.routes import normalize_host
from orchestrator.config.hosts import ip_address
from orchestrator.config.model import Policy
from orchestrator.http.answers import JSON, Answer
from orchestrator.http.auth import bearer_token, token_is
from orchestrator.metrics.exposition import exposition
from orchestrator.states import AgentState

log = Logger()

#: The dashboard's files, shipped in the package (no CDN: it works offline).
STATIC = resources.files("orchestrator.admin") / "static"
STATIC_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
}
#: The dashboard talks only to this listener, and is never framed.
PAGE_HEADERS = (
    (b"Content-Security-Policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
)


class AdminError(Exception):
    """
    A request the admin API refuses: C{code} and a message naming the problem; C{body}
    adds fields (an agent's view), C{headers} headers.
    """

    def __init__(self, code: int, message: str, body: dict | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.body = body or {}
        self.headers = headers


class AdminApp:
    """
    The admin API, the dashboard and the metrics.

    @param agents: the registry of agents.
    @param running_config: returns the configuration in effect (it changes on reload).
    @param stream: the event stream of the bus.
    @param metrics: the C{CollectorRegistry} to expose at C{/metrics}, or C{None}.
    @param holds: the proxy's hold counter (for each agent's C{held}), or C{None}.
    @param max_wait: the longest C{?wait=N} waits, whatever N asks.
    """

    app = Klein()

    def __init__(self, agents, *, clock, token: str | None, running_config: Callable[[], Any],
                 stream: EventStream, metrics=None, holds=None, max_wait: float = 300.0) -> None:
        self._agents = agents
        self._clock = clock
        self._running_config = running_config
        self.stream = stream
        self._metrics = metrics
        self.holds = holds
        self.max_wait = max_wait
        self.set_token(token)

    def set_token(self, token: str | None) -> None:
        self._token = token

    def reconfigure(self, admin) -> None:
        """
        Take up a changed C{admin} section (a reload), all of it live.
        """
        self.set_token(admin.token)
        self.max_wait = admin.max_wait
        self.stream.buffer.resize(admin.event_buffer)
        self.stream.reconfigure(max_subscribers=admin.max_event_subscribers,
                                queue_size=admin.subscriber_queue,
                                heartbeat=admin.event_heartbeat)

    def resource(self):
        """
        The listener's root resource: the Klein app, behind a check that the path is
        UTF-8 (Klein would answer otherwise in plain text, logging a traceback).
        """
        return _Gate(self.app.resource(), self._json, self._host_allowed)

    def _host_allowed(self, request) -> bool:
        """
        With a token, any C{Host}: a page of another site cannot send the token. Without
        one, only an IP address or C{localhost}: a browser sent to an attacker's name
        that resolves to this listener (DNS rebinding) would otherwise read and act on
        the API as a page of that name.
        """
        if self._token is not None:
            return True
        values = request.requestHeaders.getRawHeaders(b"host") or []
        if len(values) != 1:
            return False
        host = normalize_host(values[0].decode("latin-1"))
        return host == "localhost" or ip_address(host) is not None

    # Answers ---------------------------------------------------------------------------

    def _json(self, request, code: int, body: dict,
              headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
        # The one answers module's Answer (Date, Content-Length, no-store, HEAD); the
        # body with default=str, as an event's fields may hold any value.
        data = json.dumps(body, default=str).encode("utf-8")
        return Answer(code, data, JSON, headers).apply(request, self._clock.seconds())

    @app.handle_errors(AdminError)
    def _error(self, request, failure) -> bytes:
        error = failure.value
        return self._json(request, error.code, {"error": error.message, **error.body},
                          error.headers)

    @app.handle_errors(HTTPException)
    def _routing_error(self, request, failure) -> bytes:
        error = failure.value
        path = request.path.decode("latin-1")
        method = request.method.decode("latin-1")
        headers = tuple((name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in error.get_response({}).headers
                        if name.lower() in ("allow", "location"))
        if error.code == 404:
            message = f"no such admin endpoint: {path}"
        elif error.code == 405:
            allowed = dict(headers).get(b"Allow", b"").decode("latin-1")
            message = f"{method} is not allowed on {path}: use {allowed}"
        else:
            message = error.description or error.name
        return self._json(request, error.code, {"error": message}, headers)

    @app.handle_errors(Exception)
    def _unexpected(self, request, failure) -> bytes | None:
        if failure.check(CancelledError):
            return None  # the client went away while we waited
        log.failure("admin request {method} {path} failed", failure,
                    method=request.method, path=request.path)
        return self._json(request, 500, {"error": "internal error (see the orchestrator's log)"})

    # Helpers ---------------------------------------------------------------------------

    def _authorize(self, request) -> None:
        if self._token is not None and not token_is(
                bearer_token(request.requestHeaders.getRawHeaders(b"authorization")),
                self._token):
            raise AdminError(401, "a valid admin token is required",
                             headers=((b"WWW-Authenticate", b'Bearer realm="orchestrator"'),))

    def _agent(self, name: str):
        agent = self._agents.get(name)
        if agent is None:
            raise AdminError(404, f"no agent named {name!r}")
        return agent

    def _wait(self, request) -> float | None:
        """
        The C{?wait=N} of a request: seconds (at most L{max_wait}), or C{None}.
        """
        values = request.args.get(b"wait")
        if not values:
            return None
        try:
            seconds = float(values[0])
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise AdminError(400, f"wait must be a number of seconds, got "
                                  f"{values[0].decode('latin-1')!r}")
        return min(seconds, self.max_wait) or None

    def view(self, agent) -> dict[str, Any]:
        name = agent.name
        held = self.holds.per_agent.get(name, 0) if self.holds is not None else 0
        return agent_view(agent, agent.status(), origin=self._agents.origin(name).value,
                          hosts=self._agents.patterns(name),
                          routes=self._agents.registered(name), held=held)

    def _must_be_on_demand(self, agent, verb: str) -> None:
        if agent.config.policy is not Policy.ON_DEMAND:
            raise AdminError(409, f"agent {agent.name!r} is always-on: Swarm owns its "
                                  f"lifecycle, so it cannot be {verb}", self.view(agent))

    async def _until(self, done: Deferred, seconds: float) -> bool:
        """
        Wait for C{done} at most C{seconds}; whether it fired in time. Giving up never
        cancels what C{done} follows (a wake, a sleep).
        """
        waiting: Deferred = Deferred()
        done.addBoth(lambda result: waiting.callback(None) if not waiting.called else None)
        waiting.addTimeout(seconds, self._clock)
        try:
            await waiting
        except TimeoutError:
            return False
        return True

    # Routes ----------------------------------------------------------------------------

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request) -> bytes:
        return self._json(request, 200, {"status": "ok"})

    @app.route("/", methods=["GET"])
    def dashboard(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        for name, value in PAGE_HEADERS:
            request.setHeader(name, value)
        return (STATIC / "index.html").read_bytes()

    @app.route("/static/<string:name>", methods=["GET"])
    def static(self, request, name: str) -> bytes:
        """
        One of the dashboard's files (no directory listing, nothing outside them).
        """
        content_type = STATIC_TYPES.get(PurePosixPath(name).suffix)
        path = STATIC / name
        if content_type is None or name.startswith(".") or not path.is_file():
            raise AdminError(404, f"no such file: /static/{name}")
        for header, value in PAGE_HEADERS:
            request.setHeader(header, value)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-cache")
        return b"" if request.method == b"HEAD" else path.read_bytes()

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request) -> bytes:
        self._authorize(request)
        if self._metrics is None:
            raise AdminError(404, "metrics are not enabled")
        accept = request.getHeader(b"accept")
        body, content_type = exposition(self._metrics,
                                        accept.decode("latin-1") if accept else None)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return b"" if request.method == b"HEAD" else body

    @app.route("/api/agents", methods=["GET"])
    def agents(self, request) -> bytes:
        self._authorize(request)
        last = self.stream.buffer.last_id
        return self._json(request, 200, {
            "agents": [self.view(agent) for agent in list(self._agents.values())],
            "last_event_id": None if last is None else str(last),
            "time": self._clock.seconds(),
        })

    @app.route("/api/agents/<string:name>", methods=["GET"])
    def agent(self, request, name: str) -> bytes:
        self._authorize(request)
        return self._json(request, 200, self.view(self._agent(name)))

    @app.route("/api/agents/<string:name>/wake", methods=["POST"])
    async def wake(self, request, name: str) -> bytes:
        """
        Wake an on-demand agent: 200 when it is ready, 202 while it starts; with
        C{?wait=N}, once it is ready (200), its wake failed (503), or N passed (202).
        """
        self._authorize(request)
        agent = self._agent(name)
        self._must_be_on_demand(agent, "woken")
        wait = self._wait(request)
        if agent.state is not AgentState.READY:
            done = agent.wake(reason="admin")
            if wait is not None:
                await self._until(done, wait)
        return self._answer_for(request, agent, AgentState.READY, waited=wait is not None)

    @app.route("/api/agents/<string:name>/sleep", methods=["POST"])
    async def sleep(self, request, name: str) -> bytes:
        """
        Drain an on-demand agent and scale it to 0: 200 when it is asleep, 202 while it
        drains; with C{?wait=N}, once it is asleep (200), could not be (503), or N passed.
        """
        self._authorize(request)
        agent = self._agent(name)
        self._must_be_on_demand(agent, "put to sleep")
        wait = self._wait(request)
        if agent.state is not AgentState.SLEEPING:
            done = agent.sleep(reason="admin")
            if wait is not None:
                await self._until(done, wait)
        return self._answer_for(request, agent, AgentState.SLEEPING, waited=wait is not None)

    def _answer_for(self, request, agent, target: AgentState, *, waited: bool) -> bytes:
        """
        200 when the agent reached C{target}; 503 if a wait for it ended degraded; else
        202 (on its way).
        """
        view = self.view(agent)
        if agent.state is target:
            return self._json(request, 200, view)
        if waited and agent.state is AgentState.DEGRADED:
            raise AdminError(503, f"agent {agent.name!r} is degraded: "
                                  f"{agent.reason or 'unknown reason'}", view)
        return self._json(request, 202, view)

    @app.route("/api/events", methods=["GET"])
    def events(self, request):
        """
        The event stream (C{text/event-stream}), from after C{Last-Event-ID} (the header,
        or C{?last_event_id=}); or, for C{Accept: application/json}, the buffered events.
        """
        self._authorize(request)
        accept = (request.getHeader(b"accept") or b"").lower()
        given = request.getHeader(b"last-event-id")
        if given is None and request.args.get(b"last_event_id"):
            given = request.args[b"last_event_id"][0]
        if b"application/json" in accept and b"text/event-stream" not in accept:
            last = self.stream.buffer.last_id
            return self._json(request, 200, {
                "events": [streamed.as_dict() for streamed in self.stream.buffer.recent()],
                "last_event_id": None if last is None else str(last),
            })
        try:
            parsed = parse_event_id(given)
        except UnicodeDecodeError:
            parsed = None
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        # Proxies in front (nginx) would buffer the stream otherwise.
        request.setHeader(b"X-Accel-Buffering", b"no")
        if request.method == b"HEAD":
            return b""  # the headers a GET gets, and no stream that nobody reads
        try:
            subscriber = self.stream.subscribe(request, parsed)
        except TooManySubscribers as full:
            raise AdminError(503, str(full), headers=((b"Retry-After", b"10"),)) from None
        return subscriber.ended

    @app.route("/api/config", methods=["GET"])
    def config(self, request) -> bytes:
        self._authorize(request)
        return self._json(request, 200, running_configuration(self._running_config()))


class _Gate(Resource):
    """
    What every admin request passes first: a JSON 400 for a path that is not UTF-8 once
    percent-decoded, a JSON 403 for a C{Host} the listener does not answer to
    (L{AdminApp._host_allowed}); the rest to C{inner}.
    """

    isLeaf = True

    def __init__(self, inner, answer, host_allowed) -> None:
        super().__init__()
        self._inner = inner
        self._answer = answer
        self._host_allowed = host_allowed

    def render(self, request):
        try:
            unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return self._answer(request, 400, {"error": "the path is not UTF-8"})
        if not self._host_allowed(request):
            return self._answer(request, 403, {
                "error": "without an admin token, the admin API answers only to an IP "
                         "address or localhost in Host (a name could be a DNS rebinding "
                         "attack from a browser); set admin.token_file to use a name"})
        return self._inner.render(request)
