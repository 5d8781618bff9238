"""
Connections to backends: a lean HTTP/1.1 client with a keep-alive pool per agent.

Why not L{twisted.web.client.Agent}: on one core, a bare twisted.web proxy built on Agent
relays about 6,300 requests/s, the same proxy on a client that only relays about 16,000
(docs/benchmarks.md has the numbers for the orchestrator itself). Per request, Agent
parses the URL, builds a request object, an L{HTTPClientParser} (a line receiver) and a
chain of Deferreds, and its pool arms a timer each time a connection goes idle. This
client does one job: one request at a time per connection, both bodies streamed with
flow control. It provides L{IAgent} and L{IResponse}, so the proxy cannot tell it from
Agent.

What it keeps of Agent's behaviour: a request on a reused connection that the backend
closed before answering is retried once on a new connection when it is safe (an
idempotent method, no body); 1xx interim responses are skipped; the body framing is
Content-Length, chunked, or until the backend closes (L{PotentialDataLoss}); a failure
before any response is L{ResponseNeverReceived}, after some of it L{ResponseFailed}.
"""

from __future__ import annotations

import re
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from zope.interface import implementer

from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.http.headers import header_tokens

#: Idle keep-alive connections kept per backend: enough for the concurrency of a busy
#: agent, so steady traffic reuses connections instead of opening them.
KEEPALIVE_PER_BACKEND = 64


#: Seconds an idle connection may wait in the pool and still be used: below the idle
#: timeouts of common app servers (Node and uvicorn close after 5 s), so a request is
#: rarely sent on a connection the backend is closing at that moment; a request that
#: is anyway is retried when it is safe to.
IDLE_REUSE_SECONDS = 4.0


#: The most a backend may send as a response head (status line, headers, trailers).
MAX_HEAD_BYTES = 64 * 1024


#: Methods that may be sent again when a reused connection closed before any answer
#: (RFC 9110 section 9.2.2; PUT is idempotent too, but never sent without a body here).
_RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"DELETE"})


_NO_BODY_STATUS = frozenset({204, 304})


_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}


_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


_DIGITS = re.compile(rb"[0-9]{1,18}")


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class BadResponse(Exception):
    """
    The backend broke HTTP/1.1 (a malformed head, a bad chunk, too much header data).
    """


@implementer(IResponse)
class BackendResponse:
    """
    A backend's response: its head at once, its body when a protocol asks for it.

    Body bytes that arrive before L{deliverBody} are kept and the backend connection is
    paused, so a response held back (the client is still uploading) costs one read.
    Once its body has fully arrived, the response no longer refers to its connection,
    which may already carry another request.
    """

    request = None
    previousResponse = None

    def __init__(self, connection, version, code: int, phrase: bytes, headers: Headers,
                 length) -> None:
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length
        self._connection = connection
        self._receiver = None
        self._pending: list[bytes] = []
        self._ended: Failure | None = None
        self._stopped = False

    def setPreviousResponse(self, response) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol) -> None:
        self._receiver = protocol
        protocol.makeConnection(_BodyTransport(self))
        pending, self._pending = self._pending, []
        for data in pending:
            if self._stopped:
                break
            protocol.dataReceived(data)
        if self._ended is not None:
            ended, self._ended = self._ended, None
            protocol.connectionLost(ended)
        elif self._connection is not None:
            self._connection.resume_reading()

    # Fed by the connection.

    def _data(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._receiver is not None:
            self._receiver.dataReceived(data)
        else:
            self._pending.append(data)
            self._connection.pause_reading()

    def _end(self, reason: Failure) -> None:
        self._connection = None
        if self._receiver is not None:
            self._receiver.connectionLost(reason)
        else:
            self._ended = reason

    # Driven by the body's consumer through its transport.

    def _pause(self) -> None:
        if self._connection is not None:
            self._connection.pause_reading()

    def _resume(self) -> None:
        if self._connection is not None:
            self._connection.resume_reading()

    def _stop(self) -> None:
        self._stopped = True
        self._pending = []
        if self._connection is not None:
            self._connection.abort()


class _BodyTransport:
    """
    What a body protocol sees as its transport: a push producer over the backend
    connection, detached from it once the body has arrived.
    """

    def __init__(self, response: BackendResponse) -> None:
        self._response = response

    def pauseProducing(self) -> None:
        self._response._pause()

    def resumeProducing(self) -> None:
        self._response._resume()

    def stopProducing(self) -> None:
        self._response._stop()

    # What readBody cancels a read with.
    abortConnection = stopProducing


class _ChunkedWriter:
    """
    The consumer a request body of unknown length writes into: chunked transfer coding.
    """

    def __init__(self, transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        if data:
            self._transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])


# The states of a backend connection.
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _CLOSED = range(6)


# Where a chunked body is.
_SIZE, _DATA, _AFTER_DATA, _TRAILERS = range(4)


class BackendConnection(Protocol):
    """
    One HTTP/1.1 connection to a backend, carrying one request at a time.
    """

    def __init__(self, pool: BackendPool, key) -> None:
        self._pool = pool
        self._key = key
        self._state = _IDLE
        self._attempt: _Attempt | None = None
        self._response: BackendResponse | None = None
        self._buffer = b""
        self._head_size = 0
        self._remaining = 0
        self._chunk = _SIZE
        self._persistent = True
        self._body = None
        self._sending = False
        self._paused = False
        self._closing_state = _IDLE
        self._failure: Failure | None = None
        self._lost: Deferred | None = None
        self.idle_since = 0.0
        self._readers = {_HEAD: self._read_head, _LENGTH: self._read_length,
                         _CHUNKED: self._read_chunked, _UNTIL_CLOSE: self._read_until_close}

    def send(self, attempt: _Attempt, reused: bool) -> None:
        attempt.connection = self
        attempt.reused = reused
        self._attempt = attempt
        self._state = _HEAD
        self._buffer = b""
        self._head_size = 0
        self._persistent = True
        self.transport.write(attempt.head)
        body = self._body = attempt.body
        if body is not None:
            self._sending = True
            consumer = self.transport if body.length is not UNKNOWN_LENGTH else _ChunkedWriter(self.transport)
            self.transport.registerProducer(body, True)
            body.startProducing(consumer).addCallbacks(self._body_sent, self._body_failed)

    def _body_sent(self, _) -> None:
        if not self._sending:
            return
        self._sending = False
        self.transport.unregisterProducer()
        if self._body.length is UNKNOWN_LENGTH:
            self.transport.write(b"0\r\n\r\n")

    def _body_failed(self, failure: Failure) -> None:
        if self._sending:
            self._sending = False
            self.transport.unregisterProducer()
            self.abort()

    def _stop_sending(self) -> None:
        if self._sending:
            self._sending = False
            self._body.stopProducing()
            self.transport.unregisterProducer()

    # Reading.

    def dataReceived(self, data: bytes) -> None:
        while data and self._state is not _CLOSED:
            if self._state is _IDLE:
                # Bytes nobody asked for: this connection cannot be trusted again.
                self.abort()
                return
            data = self._readers[self._state](data)

    def _read_head(self, data: bytes) -> bytes:
        self._buffer += data
        end, skip = _end_of_head(self._buffer)
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._protocol_error("the response head is too large")
            return b""
        head, rest = self._buffer[:end], self._buffer[end + skip:]
        self._buffer = b""
        try:
            response = self._parse_head(head)
        except BadResponse as error:
            self._protocol_error(str(error))
            return b""
        if response is None:
            return rest  # an interim 1xx answer: the real one follows
        self._response = response
        self._attempt.responded(response)
        if self._state is _HEAD:  # nothing else to read
            self._end_response(reusable=not rest)
        return rest

    def _parse_head(self, head: bytes) -> BackendResponse | None:
        self._head_size += len(head)
        if self._head_size > MAX_HEAD_BYTES:
            raise BadResponse("the response head is too large")
        lines = head.split(b"\n")
        version_text, _, rest = lines[0].rstrip(b"\r").partition(b" ")
        status, _, phrase = rest.partition(b" ")
        if version_text not in _VERSIONS or len(status) != 3 or not status.isdigit():
            raise BadResponse(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        code = int(status)
        headers = Headers()
        lengths, codings, connection = [], [], []
        for line in lines[1:]:
            line = line.rstrip(b"\r")
            if line[:1] in (b" ", b"\t"):
                raise BadResponse("obsolete line folding in the response headers")
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise BadResponse(f"a malformed response header line: {line[:80]!r}")
            value = value.strip(b" \t")
            lowered = name.lower()
            if lowered == b"content-length":
                lengths.extend(v.strip() for v in value.split(b","))
            elif lowered == b"transfer-encoding":
                codings.append(value)
            elif lowered == b"connection":
                connection.append(value)
            headers.addRawHeader(name, value)
        if 100 <= code < 200:
            if code == 101:
                raise BadResponse("101 Switching Protocols to a request that asked for none")
            return None
        version = _VERSIONS[version_text]
        self._persistent = version == (1, 1) and b"close" not in header_tokens(connection)
        if self._attempt.method == b"HEAD" or code in _NO_BODY_STATUS:
            length = 0
        elif codings:
            length = UNKNOWN_LENGTH
            if [t.strip().lower() for t in b",".join(codings).split(b",")][-1] == b"chunked":
                self._state, self._chunk = _CHUNKED, _SIZE
                # Both framings sent: a smuggling attempt or a broken backend.
                self._persistent = self._persistent and not lengths
            else:
                self._state, self._persistent = _UNTIL_CLOSE, False
        elif lengths:
            if len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0]):
                raise BadResponse("an invalid Content-Length in the response")
            length = self._remaining = int(lengths[0])
            if length:
                self._state = _LENGTH
        else:
            length = UNKNOWN_LENGTH
            self._state, self._persistent = _UNTIL_CLOSE, False
        return BackendResponse(self, version, code, phrase, headers, length)

    def _read_length(self, data: bytes) -> bytes:
        piece, rest = data[: self._remaining], data[self._remaining:]
        self._remaining -= len(piece)
        self._response._data(piece)
        if self._remaining == 0 and self._state is _LENGTH:
            self._end_response(reusable=not rest)
        return rest

    def _read_until_close(self, data: bytes) -> bytes:
        self._response._data(data)
        return b""

    def _read_chunked(self, data: bytes) -> bytes:
        while data and self._state is _CHUNKED:
            if self._chunk is _DATA:
                piece, data = data[: self._remaining], data[self._remaining:]
                self._remaining -= len(piece)
                if self._remaining == 0:
                    self._chunk = _AFTER_DATA
                self._response._data(piece)
                continue
            self._buffer += data
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > 4096:
                    self._protocol_error("a chunk size line is too long")
                return b""
            line, data = self._buffer[:newline].rstrip(b"\r"), self._buffer[newline + 1:]
            self._buffer = b""
            if self._chunk is _SIZE:
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    self._protocol_error(f"an invalid chunk size: {line[:40]!r}")
                    return b""
                self._remaining = int(size, 16)
                self._chunk = _DATA if self._remaining else _TRAILERS
            elif self._chunk is _AFTER_DATA:
                if line:
                    self._protocol_error("a chunk longer than its size")
                    return b""
                self._chunk = _SIZE
            elif line:
                self._head_size += len(line)
                if self._head_size > MAX_HEAD_BYTES:
                    self._protocol_error("the response trailers are too large")
                    return b""
            else:
                self._end_response(reusable=not data)
                return data
        return data

    def _end_response(self, reusable: bool) -> None:
        response, self._response = self._response, None
        self._attempt = None
        self._state = _IDLE
        if self._sending:
            # The backend answered before reading the whole request: the rest of the
            # upload is dropped, and the connection cannot carry another request.
            self._stop_sending()
            self.abort()
        elif not reusable:
            self.abort()  # bytes beyond the response: nothing more can be trusted
        elif self._persistent:
            self._release()
        else:
            self.transport.loseConnection()
        response._end(Failure(ResponseDone()))

    def _release(self) -> None:
        self.resume_reading()
        if not self._pool.put(self._key, self):
            self.transport.loseConnection()

    def _protocol_error(self, message: str) -> None:
        self._failure = Failure(BadResponse(message))
        self.abort()

    # Flow control and closing.

    def pause_reading(self) -> None:
        if not self._paused and self._state is not _CLOSED:
            self._paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._paused and self._state is not _CLOSED:
            self._paused = False
            self.transport.resumeProducing()

    def abort(self) -> None:
        if self.transport is not None and self._state is not _CLOSED:
            self._closing_state, self._state = self._state, _CLOSED
            self.transport.abortConnection()

    def close(self) -> Deferred:
        """
        Close an idle connection; fires once it is closed.
        """
        if self._lost is None:
            self._lost = Deferred()
            self.transport.loseConnection()
        return self._lost

    def connectionLost(self, reason: Failure = None) -> None:
        state = self._state if self._state is not _CLOSED else self._closing_state
        self._state = _CLOSED
        self._pool.forget(self._key, self)
        failure = self._failure or reason
        self._stop_sending()
        attempt, response = self._attempt, self._response
        self._attempt = self._response = None
        if response is not None:
            if state is _UNTIL_CLOSE and reason.check(ConnectionDone) and failure is reason:
                response._end(Failure(PotentialDataLoss()))
            else:
                response._end(Failure(ResponseFailed([failure])))
        elif attempt is not None and state is _HEAD:
            attempt.lost(failure, answered=bool(self._buffer) or self._head_size > 0)
        if self._lost is not None:
            self._lost.callback(None)


class _QuietFactory(Factory):
    # One "Starting factory"/"Stopping factory" log pair per backend connection is noise.
    noisy = False

    def __init__(self, pool: BackendPool, key) -> None:
        self._pool = pool
        self._key = key

    def buildProtocol(self, addr) -> BackendConnection:
        return BackendConnection(self._pool, self._key)


class _Attempt:
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

    def start(self) -> Deferred:
        connection = self.pool.take(self.key)
        if connection is not None:
            connection.send(self, reused=True)
        else:
            self._connect()
        return self.deferred

    def _connect(self) -> None:
        self._connecting = self.endpoint.connect(_QuietFactory(self.pool, self.key))
        self._connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, connection: BackendConnection) -> None:
        self._connecting = None
        if self._cancelled:
            connection.abort()
        else:
            connection.send(self, reused=False)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
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
        if (self.reused and not answered and not self._retried and not self._cancelled
                and self.body is None and self.method in _RETRYABLE):
            # A keep-alive connection the backend had closed as we used it.
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
        if self._connecting is not None:
            self._connecting.cancel()
        if self.connection is not None:
            self.connection.abort()


class BackendPool:
    """
    One agent's idle keep-alive connections, per backend address: the most recently
    used first, none idle for more than L{IDLE_REUSE_SECONDS}.
    """

    def __init__(self, clock, max_idle: int = KEEPALIVE_PER_BACKEND) -> None:
        self._clock = clock
        self.max_idle = max_idle
        self._idle: dict[object, list[BackendConnection]] = {}

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
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle:
            return False
        connection.idle_since = self._clock.seconds()
        idle.append(connection)
        return True

    def forget(self, key, connection: BackendConnection) -> None:
        idle = self._idle.get(key)
        if idle and connection in idle:
            idle.remove(connection)

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
                 endpoints: BackendEndpoints | None = None) -> None:
        """
        @param endpoints: where connections come from; by default one endpoint per
            backend address, made once (L{BackendEndpoints}).
        """
        self._pool = pool
        self._endpoints = endpoints or BackendEndpoints(reactor, connect_timeout)

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
        endpoint = self._endpoints.get(scheme, authority)
        head = _request_head(method, target, headers or Headers(), authority, bodyProducer)
        return _Attempt(endpoint, self._pool, key, method, head, bodyProducer).start()


class BackendClients:
    """
    The backend client of each agent: one per agent's keep-alive pool, made once (one
    per request showed in the profile), all reaching backends through the same
    endpoints.
    """

    def __init__(self, clock, endpoints: BackendEndpoints) -> None:
        self._clock = clock
        self.endpoints = endpoints
        self._clients: WeakKeyDictionary = WeakKeyDictionary()

    def for_agent(self, agent) -> BackendClient:
        """
        The client on C{agent.pool}.
        """
        client = self._clients.get(agent)
        if client is None:
            client = self._clients[agent] = BackendClient(
                self._clock, agent.pool, self.endpoints.connect_timeout, self.endpoints)
        return client

    def reconfigure(self, connect_timeout: float) -> None:
        """
        Take up a new connect timeout (a reload).
        """
        self.endpoints.set_connect_timeout(connect_timeout)


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


def _end_of_head(buffer: bytes) -> tuple[int, int]:
    """
    Where a response head ends in C{buffer} (the first empty line, CRLF or bare LF):
    its length and the length of the blank line after it, or C{(-1, 0)}.
    """
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return (crlf, 4) if crlf >= 0 else (-1, 0)
