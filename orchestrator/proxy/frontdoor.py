"""
The HTTP/1.1 edge: a twisted.web Site whose channels enforce a header deadline and a
header size limit, answer every protocol error with a JSON body, and whose requests start
their handling when the headers are complete, so request bodies stream.

Twisted 26 accepts trickled headers forever and answers oversized headers and smuggling
attempts with a bare C{400}; these subclasses fix that. They use three private hooks of
L{HTTPChannel} (C{_respondToBadRequestAndDisconnect}, C{_command}, C{_path}) that have been
stable for years; the tests pin their behaviour.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python import failure
from twisted.web import http, server

from orchestrator.agents.drain import ConnectionRegistry
from orchestrator.flows import cancel_call
from orchestrator.http.answers import error_answer
from orchestrator.http.throttle import ThrottledLog

log = Logger()


class FrontDoorChannel(http.HTTPChannel):
    """
    An HTTP channel for hostile clients: complete headers within C{header_timeout}
    (else 408), at most C{totalHeadersSize} bytes of them (else 431), JSON on every error.
    """

    _header_timer = None

    def connectionMade(self) -> None:
        # twisted.web logs every idle connection it times out: throttled, as any client
        # can open many.
        self._log = self.site.client_log
        super().connectionMade()
        # twisted.web asks for both addresses on every request: one syscall each, once.
        self._host, self._peer = self.transport.getHost(), self.transport.getPeer()
        self.site.channels.add(self)
        self.totalHeadersSize = self.site.max_header_bytes
        self.MAX_LENGTH = self.site.max_header_bytes

    def dataReceived(self, data: bytes) -> None:
        if self._header_timer is None and self.line_mode and not self._handlingRequest:
            self._header_timer = self.callLater(self.site.header_timeout, self._headers_too_slow)
        super().dataReceived(data)

    def getHost(self):
        return self._host

    def getPeer(self):
        return self._peer

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(431, f"request headers exceed {self.totalHeadersSize} bytes")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if getattr(self, "_command", None) is None:
            self._refuse(414, f"request line exceeds {self.MAX_LENGTH} bytes")
        else:
            self._refuse(431, f"a request header exceeds {self.MAX_LENGTH} bytes")

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        # Twisted ignores "identity" and takes the first line that says "chunked" even
        # when another line follows it. Here every line's codings are noted and judged
        # together once the headers are complete (RFC 9112 section 6).
        if header != b"Transfer-Encoding":
            return super()._maybeChooseTransferDecoder(header, data)
        request = self.requests[-1]
        request.transfer_codings = (*request.transfer_codings, *(
            item.strip(b" \t").lower() for item in data.split(b",") if item.strip(b" \t")))
        request.has_transfer_encoding = True
        return True

    def _choose_transfer_coding(self) -> bool:
        """
        The headers are complete: take up their Transfer-Encoding, or refuse it.
        """
        request = self.requests[-1]
        if not request.has_transfer_encoding:
            return True
        if self._transferDecoder is not None:  # Content-Length too: smuggling
            self._respondToBadRequestAndDisconnect()
            return False
        refusal = transfer_coding_refusal(request.transfer_codings, self._version)
        if refusal is not None:
            self._refuse(*refusal)
            return False
        return super()._maybeChooseTransferDecoder(b"Transfer-Encoding", b"chunked")

    def allHeadersReceived(self) -> None:
        self._cancel_header_timer()
        if not self._choose_transfer_coding():
            self.length = None  # nothing more is read: the connection is closing
            return
        super().allHeadersReceived()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.line_mode and not self._handlingRequest:
            self._refuse(408, f"request headers not received within {self.site.header_timeout:g}s")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self._refuse(400, "malformed HTTP request")

    def _refuse(self, code: int, message: str) -> None:
        """
        Answer a request twisted.web gave up on, and close.
        """
        self._cancel_header_timer()
        self.transport.write(error_answer(code, message).raw(self.site.reactor.seconds()))
        self.loseConnection()
        # Ignore whatever else the client sends; the connection is closing.
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda *args: None

    def _cancel_header_timer(self) -> None:
        self._header_timer = cancel_call(self._header_timer)

    def connectionLost(self, reason) -> None:
        self._cancel_header_timer()
        self.site.channels.discard(self)
        super().connectionLost(reason)

    def go_away(self) -> None:
        """
        Close once the current request is answered, or now if there is none.
        """
        if self.requests:
            self.persistent = False
        else:
            self.loseConnection()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


def transfer_coding_refusal(codings: tuple[bytes, ...], version: bytes) -> tuple[int, str] | None:
    """
    Why a request with the transfer C{codings} so far (lower-cased, in order, over all
    its Transfer-Encoding lines) is refused, as C{(status, message)}, or C{None}: chunked
    must be the final coding, applied once (400, RFC 9112 sections 6.1 and 6.3); other
    codings are not understood here (501); HTTP/1.0 has no Transfer-Encoding (400).
    """
    if version != b"HTTP/1.1":
        return 400, "Transfer-Encoding in an HTTP/1.0 request"
    if not codings or codings[-1] != b"chunked":
        return 400, "chunked must be the final transfer coding"
    if codings.count(b"chunked") > 1:
        return 400, "chunked may be applied only once"
    if len(codings) > 1:
        other = next(coding for coding in codings if coding != b"chunked")
        return 501, f"transfer coding {other.decode('latin-1')!r} is not supported"
    return None


class FrontDoorRequest(server.Request):
    """
    A request that hands its body to the resource as it arrives instead of buffering it.

    When a request has a body, the resource's C{prepare(request)} runs as soon as the
    headers are complete and returns the file-like object the body is written into (a
    stream to the backend, or a sink). C{render} runs once the body is complete, as usual.
    """

    # twisted.web would read a form body back from request.content; we stream it instead.
    _parsePOSTFormSubmission = False
    # A proxied response says what the backend said: no Content-Type if it sent none
    # (twisted.web would add text/html). Local answers always set their own.
    defaultContentType = None
    handler = None
    #: Whether it has a Transfer-Encoding line, and the codings they named, in order.
    has_transfer_encoding = False
    transfer_codings: tuple[bytes, ...] = ()

    def process(self) -> None:
        """
        Hand the request to the proxy's resource. twisted.web's own C{process} also
        formats C{Date} and C{Server} headers and walks the resource tree for every
        request; a proxied answer keeps the backend's C{Date} (the exchange adds one only
        where the backend sent none; local answers set their own), the version is
        nobody's business, and the proxy has one resource.
        """
        self.site = self.channel.site
        # What twisted.web logs about a request is something its client can repeat.
        self._log = self.site.client_log
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(failure.Failure())

    def gotLength(self, length) -> None:
        if length == 0:
            super().gotLength(length)
            return
        channel = self.channel
        self.method, self.uri, self.clientproto = channel._command, channel._path, channel._version
        self.path = self.uri.split(b"?", 1)[0]
        self.content = channel.site.resource.prepare(self, length)


class FrontDoorSite(server.Site):
    """
    The proxy listener's Site: tracks its channels so shutdown can drain them.
    """

    protocol = FrontDoorChannel
    requestFactory = FrontDoorRequest
    displayTracebacks = False

    def __init__(self, resource, *, header_timeout: float, max_header_bytes: int,
                 idle_timeout: float, reactor) -> None:
        super().__init__(resource, timeout=idle_timeout, reactor=reactor)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.channels = ConnectionRegistry()
        #: What twisted.web logs about one client's connections and requests.
        self.client_log = ThrottledLog(Logger(namespace="twisted.web.http"), reactor)

    def log(self, request) -> None:
        """
        No access log line per request: proxied traffic is counted in metrics, and one
        formatted line per request costs more than the proxying itself.
        """
