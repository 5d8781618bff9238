"""
One HTTP/1.1 connection to a backend, one request at a time: writing the request head
and body, reading the response head and its body (Content-Length, chunked, or until
close), and handing the connection back to its pool when it can carry another.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.http.client import Attempt, BackendPool

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from orchestrator.http.headers import header_tokens
from orchestrator.http.response import BackendResponse, BadResponse

#: The most a backend may send as a response head (status line, headers, trailers).
MAX_HEAD_BYTES = 64 * 1024


_NO_BODY_STATUS = frozenset({204, 304})


_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}


_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


_DIGITS = re.compile(rb"[0-9]{1,18}")


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


#: What no response head may hold (RFC 9110 section 5.5, RFC 9112 sections 2.2 and 4):
#: control characters but tab, and a CR that does not end a line. One search per head.
_FORBIDDEN_IN_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")


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
        self._attempt: Attempt | None = None
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

    def connectionMade(self) -> None:
        # What one read may add to a client's buffer, and what of an upload is buffered
        # for the backend before the client is paused (the proxy's max_buffered_bytes).
        size = self._pool.buffer_bytes
        if size is not None:
            self.transport.bufferSize = size

    def send(self, attempt: Attempt, reused: bool) -> None:
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
        version, code, phrase, headers, lengths, codings, connection = parse_head(head)
        if lengths and (len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0])):
            # Checked whatever the status and method: a HEAD or 304 answer's length is
            # passed to the client.
            raise BadResponse("an invalid Content-Length in the response")
        if 100 <= code < 200:
            if code == 101:
                raise BadResponse("101 Switching Protocols to a request that asked for none")
            return None
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


class ConnectionFactory(Factory):
    """
    Makes the connection for one pool key (a backend address), quietly: one "Starting
    factory"/"Stopping factory" log pair per backend connection is noise.
    """

    noisy = False

    def __init__(self, pool: BackendPool, key) -> None:
        self._pool = pool
        self._key = key

    def buildProtocol(self, addr) -> BackendConnection:
        return BackendConnection(self._pool, self._key)


def parse_head(head: bytes):
    """
    The parts of a response head: its version (C{(1, 1)}), status code, reason phrase,
    headers, and the values of the headers that frame the body and the connection
    (Content-Length items, Transfer-Encoding and Connection lines). Raises
    L{BadResponse} for a head that is not HTTP/1.x, or holds what a client must never
    be sent: a control character or a bare CR anywhere (in the reason phrase, it would
    start a header of the backend's making), a status code outside 100-599.
    """
    forbidden = _FORBIDDEN_IN_HEAD.search(head)
    if forbidden is not None:
        raise BadResponse(f"a control character in the response head: {forbidden[0]!r}")
    lines = head.split(b"\n")
    version_text, _, rest = lines[0].rstrip(b"\r").partition(b" ")
    status, _, phrase = rest.partition(b" ")
    if version_text not in _VERSIONS or len(status) != 3 or not status.isdigit():
        raise BadResponse(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    if not 100 <= int(status) <= 599:
        raise BadResponse(f"the status code {status.decode('ascii')} is not 100-599")
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
    return _VERSIONS[version_text], int(status), phrase, headers, lengths, codings, connection


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
