"""
Where a request body goes while it arrives: streamed to a backend with flow control, or
counted and dropped. Both stand in for twisted.web's C{request.content}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

#: Request body bytes buffered while the backend is not taking them, before the client
#: is paused (the proxy's C{max_buffered_bytes} sets it per body).
BODY_BUFFER_LIMIT = 64 * 1024


class RequestContent:
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


class DiscardedBody(RequestContent):
    """
    Where the body of a request answered without it goes: counted, not kept.
    """

    def write(self, data: bytes) -> None:
        self.received += len(data)


@implementer(IBodyProducer)
class StreamingBody(RequestContent):
    """
    A request body relayed as it arrives: twisted.web writes into it (it stands in for
    C{request.content}) and the backend connection consumes it. When the backend cannot
    keep up, the client's socket is paused: memory stays bounded for any body size.
    """

    def __init__(self, client_transport, length: int | None,
                 limit: int = BODY_BUFFER_LIMIT) -> None:
        """
        @param client_transport: the client's connection (an L{IPushProducer}), paused
            while the backend is slower than the upload.
        @param length: the body's length, C{None} for a chunked upload.
        @param limit: the bytes buffered before the client is paused.
        """
        self.length = UNKNOWN_LENGTH if length is None else length
        self._client = client_transport
        self._limit = limit
        self._when_ready: list = []
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
        if self._buffered > self._limit:
            self._pause_client()
        if self._when_ready and self._buffered >= self._limit:
            self._ready()

    def complete(self) -> None:
        """
        The whole body has arrived.
        """
        self._complete = True
        self._ready()
        self._flush()

    @property
    def ready(self) -> bool:
        """
        Whether the body is worth a backend's connection: complete, or a buffer's worth.
        """
        return self._complete or self._buffered >= self._limit or self._consumer is not None

    def when_ready(self, call) -> None:
        """
        Call C{call} once the body is L{ready} (now, if it is): a slow upload does not
        hold a backend connection while it trickles in.
        """
        if self.ready:
            call()
        else:
            self._when_ready.append(call)

    def _ready(self) -> None:
        calls, self._when_ready = self._when_ready, []
        for call in calls:
            call()

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
        """
        Nobody wants the rest of the body: what still comes is read and dropped.
        """
        self._stopped = True
        self._buffer = []
        self._buffered = 0
        self._when_ready = []
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


class KeptBody(RequestContent):
    """
    A small request body kept whole for a local API (and readable back, as
    C{request.content} is), up to C{limit} bytes; beyond, the rest is counted and
    dropped, and the body is C{None} (a 413 for whoever reads it).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._read = 0

    @property
    def overflowed(self) -> bool:
        return self.received > self._limit

    def write(self, data: bytes) -> None:
        if self.received + len(data) <= self._limit:
            self._parts.append(data)
        else:
            self._parts = []
        self.received += len(data)

    def value(self) -> bytes | None:
        return None if self.overflowed else b"".join(self._parts)

    def seek(self, offset: int = 0, *args) -> None:
        self._read = offset

    def tell(self) -> int:
        return self._read if self._read else self.received

    def read(self, size: int = -1) -> bytes:
        data = (self.value() or b"")[self._read:]
        data = data if size is None or size < 0 else data[:size]
        self._read += len(data)
        return data
