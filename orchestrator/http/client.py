"""
Requests to backends: a lean HTTP/1.1 client with a keep-alive pool per agent (the
connections themselves are L{orchestrator.http.connection}).

Why not L{twisted.web.client.Agent}: on one core, a bare twisted.web proxy built on Agent
relays about 6,300 requests/s, the same proxy on a client that only relays about 16,000
(docs/benchmarks.md has the numbers for the orchestrator itself). Per request, Agent
parses the URL, builds a request object, an L{HTTPClientParser} (a line receiver) and a
chain of Deferreds, and its pool arms a timer each time a connection goes idle. This
client does one job: one request at a time per connection, both bodies streamed with
flow control. It provides L{IAgent} and L{IResponse}, so the proxy cannot tell it from
Agent.

What it keeps of Agent's behaviour, and widens: a request on a connection that the
backend closed before answering is retried once on a new connection when it is safe (an
idempotent method, no body), whether the connection was reused (a stale keep-alive) or
new (a task that died with the request: a new connection may reach another task); 1xx interim responses are skipped; the body framing is
Content-Length, chunked, or until the backend closes (L{PotentialDataLoss}); a failure
before any response is L{ResponseNeverReceived}, after some of it L{ResponseFailed}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from weakref import WeakKeyDictionary, ref

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent
from zope.interface import implementer

from orchestrator.http.connection import BackendConnection, ConnectionFactory
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.http.response import BackendResponse

#: Idle keep-alive connections kept per backend: enough for the concurrency of a busy
#: agent, so steady traffic reuses connections instead of opening them.
KEEPALIVE_PER_BACKEND = 64


#: Seconds an idle connection may wait in the pool and still be used: below the idle
#: timeouts of common app servers (Node and uvicorn close after 5 s), so a request is
#: rarely sent on a connection the backend is closing at that moment; a request that
#: is anyway is retried when it is safe to.
IDLE_REUSE_SECONDS = 4.0


#: Connections one agent's pool may have open by default (in use, idle or opening).
MAX_OPEN_PER_AGENT = 256


class BackendBusy(Exception):
    """
    The agent's backend has as many connections open as it may, and none came free in
    time for this request.
    """

    def __init__(self, most: int, waited: float) -> None:
        super().__init__(f"{most} connections to it are in use, the most allowed, and none "
                         f"came free within {waited:g}s")
        self.most = most


#: Methods that may be sent again when a reused connection closed before any answer
#: (RFC 9110 section 9.2.2; PUT is idempotent too, but never sent without a body here).
_RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"DELETE"})


class Attempt:
    """
    One request, from choosing a connection to the response head (or the failure).
    """

    def __init__(self, endpoint, pool: BackendPool, key, method: bytes, head: bytes, body) -> None:
        self.endpoint = endpoint
        self.pool = pool
        self.key = key
        self.method = method
        self.head = head
        self.body = body
        self.deferred = Deferred(self._cancel)
        self.connection: BackendConnection | None = None
        self.reused = False
        self._connecting: Deferred | None = None
        self._retried = False
        self._cancelled = False
        #: While it waits for the pool to have room: the timer that gives up.
        self.queued = None

    def start(self) -> Deferred:
        self.take_turn()
        return self.deferred

    def take_turn(self) -> None:
        """
        Use an idle connection, or open one if the pool has room, or wait for room.
        """
        connection = self.pool.take(self.key)
        if connection is not None:
            connection.send(self, reused=True)
        elif self.pool.has_room():
            self._connect()
        else:
            self.pool.wait(self)

    def waited_too_long(self, waited: float) -> None:
        self.queued = None
        self._fail(Failure(BackendBusy(self.pool.max_open, waited)))

    def _connect(self) -> None:
        self.pool.opening()
        self._connecting = self.endpoint.connect(ConnectionFactory(self.pool, self.key))
        self._connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, connection: BackendConnection) -> None:
        self._connecting = None
        if self._cancelled:
            connection.abort()
        else:
            connection.send(self, reused=False)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        self.pool.not_opened()
        if not self._cancelled:
            # A cancelled request fails with CancelledError from its own Deferred, not
            # with the endpoint's ConnectingCancelledError (which reads as unreachable).
            self._fail(failure)

    def responded(self, response: BackendResponse) -> None:
        if not self.deferred.called:
            self.deferred.callback(response)

    def lost(self, reason: Failure, answered: bool) -> None:
        """
        The connection closed before a whole response head.
        """
        if (not answered and not self._retried and not self._cancelled
                and self.body is None and self.method in _RETRYABLE):
            # A keep-alive connection the backend had closed as we used it, or a task
            # that died with the request (a name with several addresses connects to
            # another): sent again once, as an idempotent request without a body may be.
            self._retried = True
            self.connection = None
            self._connect()
            return
        self._fail(Failure((ResponseFailed if answered else ResponseNeverReceived)([reason])))

    def _fail(self, failure: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(failure)

    def _cancel(self, deferred: Deferred) -> None:
        self._cancelled = True
        if self.queued is not None:
            self.pool.stop_waiting(self)
        if self._connecting is not None:
            self._connecting.cancel()
        if self.connection is not None:
            self.connection.abort()


class BackendPool:
    """
    One agent's backend connections: the idle keep-alive ones per backend address, the
    most recently used first, none idle for more than L{IDLE_REUSE_SECONDS}; and a count
    of all it has open (in use, idle, being opened), at most C{max_open}. A request
    beyond waits for one to come free, at most C{wait_timeout} seconds.
    """

    def __init__(self, clock, max_idle: int = KEEPALIVE_PER_BACKEND,
                 max_open: int = MAX_OPEN_PER_AGENT, wait_timeout: float = 5.0) -> None:
        self._clock = clock
        self.max_idle = max_idle
        self.max_open = max_open
        self.wait_timeout = wait_timeout
        #: The send buffer and read size of its connections (C{None}: Twisted's 64 KiB).
        self.buffer_bytes: int | None = None
        self.open = 0
        self._idle: dict[object, list[BackendConnection]] = {}
        self._waiting: deque[Attempt] = deque()

    def take(self, key) -> BackendConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        connection = idle.pop()
        if self._clock.seconds() - connection.idle_since <= IDLE_REUSE_SECONDS:
            return connection
        # The newest is too old, so all are: close them, connect anew.
        idle.append(connection)
        del self._idle[key]
        for stale in idle:
            stale.close()
        return None

    def put(self, key, connection: BackendConnection) -> bool:
        for attempt in self._waiting:
            if attempt.key == key:  # a request waiting for room takes it at once
                self._dequeue(attempt)
                connection.send(attempt, reused=True)
                return True
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle:
            return False
        connection.idle_since = self._clock.seconds()
        idle.append(connection)
        return True

    def forget(self, key, connection: BackendConnection) -> None:
        """
        C{connection} closed: it is neither idle nor open any more.
        """
        idle = self._idle.get(key)
        if idle and connection in idle:
            idle.remove(connection)
        self.not_opened()

    # Room for connections.

    def has_room(self) -> bool:
        return self.open < self.max_open

    def opening(self) -> None:
        self.open += 1

    def not_opened(self) -> None:
        """
        A connection closed, or one being opened never was: its room is free.
        """
        self.open -= 1
        if self._waiting and self.has_room():
            attempt = self._waiting[0]
            self._dequeue(attempt)
            attempt.take_turn()

    def wait(self, attempt: Attempt) -> None:
        """
        Keep C{attempt} until there is room (or a connection to its backend comes
        free), at most C{wait_timeout} seconds; an idle connection to another backend
        is closed to make room.
        """
        attempt.queued = self._clock.callLater(self.wait_timeout, self._gave_up, attempt)
        self._waiting.append(attempt)
        for connections in self._idle.values():
            if connections:
                connections.pop(0).close()  # the oldest; its closing makes the room
                return

    def stop_waiting(self, attempt: Attempt) -> None:
        if attempt in self._waiting:
            self._dequeue(attempt)

    def _dequeue(self, attempt: Attempt) -> None:
        self._waiting.remove(attempt)
        queued, attempt.queued = attempt.queued, None
        if queued is not None and queued.active():
            queued.cancel()

    def _gave_up(self, attempt: Attempt) -> None:
        attempt.queued = None
        if attempt in self._waiting:
            self._waiting.remove(attempt)
        attempt.waited_too_long(self.wait_timeout)

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def close_idle(self) -> Deferred:
        """
        Close every idle connection (requests in flight keep theirs); fires when they
        are closed.
        """
        idle = [connection for connections in self._idle.values() for connection in connections]
        self._idle.clear()
        if not idle:
            return succeed(None)
        return gatherResults([connection.close() for connection in idle]).addCallback(lambda _: None)


@implementer(IAgent)
class BackendClient:
    """
    The HTTP client for one agent's backend, on its pool.
    """

    def __init__(self, reactor, pool: BackendPool, connect_timeout: float,
                 endpoints: BackendEndpoints | None = None,
                 avoid: Callable[[], frozenset[str]] | None = None) -> None:
        """
        @param endpoints: where connections come from; by default one endpoint per
            backend address, made once (L{BackendEndpoints}).
        @param avoid: the addresses known down (the agent's tasks that no longer run),
            tried last when a backend name has several.
        """
        self._pool = pool
        self._endpoints = endpoints or BackendEndpoints(reactor, connect_timeout)
        self._avoid = avoid

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer=None) -> Deferred:
        """
        Send C{method} C{uri} (an absolute http or https URL) with C{headers} and the
        body C{bodyProducer} writes; fires with a L{BackendResponse}.
        """
        scheme, _, rest = uri.partition(b"://")
        authority, slash, path = rest.partition(b"/")
        key = (scheme, authority)
        target = slash + path or b"/"
        endpoint = self._endpoints.get(scheme, authority, self._avoid)
        head = _request_head(method, target, headers or Headers(), authority, bodyProducer)
        return Attempt(endpoint, self._pool, key, method, head, bodyProducer).start()


class BackendClients:
    """
    The backend client of each agent: one per agent's keep-alive pool, made once (one
    per request showed in the profile), all reaching backends through the same
    endpoints.
    """

    def __init__(self, clock, endpoints: BackendEndpoints,
                 max_connections: int = MAX_OPEN_PER_AGENT,
                 buffer_bytes: int | None = None) -> None:
        """
        @param max_connections: connections each agent's pool may have open.
        @param buffer_bytes: each connection's send buffer and read size (half the
            proxy's C{max_buffered_bytes}); C{None}: Twisted's.
        """
        self._clock = clock
        self.endpoints = endpoints
        self._max_connections = max_connections
        self._buffer_bytes = buffer_bytes
        self._clients: WeakKeyDictionary = WeakKeyDictionary()

    def for_agent(self, agent) -> BackendClient:
        """
        The client on C{agent.pool}, avoiding the addresses C{agent.down_addresses}
        names.
        """
        client = self._clients.get(agent)
        if client is None:
            self._limit(agent.pool)
            # The client holds the agent weakly: it is the value of a weak-keyed
            # dictionary, which a reference to its key would keep for ever.
            agent_ref = ref(agent)

            def avoid() -> frozenset[str]:
                held = agent_ref()
                return frozenset() if held is None else held.down_addresses

            client = self._clients[agent] = BackendClient(
                self._clock, agent.pool, self.endpoints.connect_timeout, self.endpoints,
                avoid=avoid)
        return client

    def _limit(self, pool: BackendPool) -> None:
        # A request waits for room as long as it would for a connection.
        pool.max_open = self._max_connections
        pool.wait_timeout = self.endpoints.connect_timeout
        pool.buffer_bytes = self._buffer_bytes

    def reconfigure(self, connect_timeout: float, max_connections: int | None = None,
                    buffer_bytes: int | None = None) -> None:
        """
        Take up a new connect timeout, bound on connections per agent and buffer size
        (a reload); connections open keep their buffers.
        """
        self.endpoints.set_connect_timeout(connect_timeout)
        if max_connections is not None:
            self._max_connections = max_connections
        if buffer_bytes is not None:
            self._buffer_bytes = buffer_bytes
        for agent in list(self._clients.keys()):
            self._limit(agent.pool)


def _request_head(method: bytes, target: bytes, headers: Headers, authority: bytes, body) -> bytes:
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    if not headers.hasHeader(b"host"):
        lines += [b"Host: ", authority, b"\r\n"]
    for name, values in headers.getAllRawHeaders():
        for value in values:
            lines += [name, b": ", value, b"\r\n"]
    if body is None:
        if method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: 0\r\n")
    elif body.length is UNKNOWN_LENGTH:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    else:
        lines.append(b"Content-Length: %d\r\n" % body.length)
    lines.append(b"\r\n")
    return b"".join(lines)
