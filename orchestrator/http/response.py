"""
A backend's response as the proxy sees it (an L{IResponse}): its head at once, its
body streamed to whoever asks, with flow control back to the backend connection.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer


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
