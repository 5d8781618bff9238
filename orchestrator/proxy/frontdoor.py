"""
The HTTP/1.1 edge: a twisted.web Site whose channels enforce deadlines (headers from the
connection's start, body progress, a client taking its response) and limits (header
size, bytes held per connection, connections in all and per client address), answer
every protocol error with a JSON body, and whose requests start their handling when the
headers are complete, so request bodies stream.

Twisted 26 accepts trickled headers forever, lets a client that reads nothing hold its
response and its backend request for good, takes any number of connections, and answers
oversized headers and smuggling attempts with a bare C{400}; these subclasses fix that.
They use private hooks of L{HTTPChannel} (C{_respondToBadRequestAndDisconnect},
C{_maybeChooseTransferDecoder}, C{_command}, C{_path}, C{_transferDecoder}) that have
been stable for years; the tests pin their behaviour.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python import failure
from twisted.web import http, server

from orchestrator.agents.drain import ConnectionRegistry
from orchestrator.config.model import ProxyConfig
from orchestrator.flows import cancel_call
from orchestrator.http.answers import error_answer
from orchestrator.http.headers import is_trusted
from orchestrator.http.throttle import ThrottledLog

log = Logger()


class FrontDoorChannel(http.HTTPChannel):
    """
    An HTTP channel for hostile clients: complete headers within C{header_timeout} of
    connecting or of a later request's first byte (else 408), at most
    C{totalHeadersSize} bytes of them (else 431), a request body that never stalls for
    C{body_timeout} (else 408), a response taken within C{send_timeout} of filling the
    connection's buffer (else the connection is cut), at most C{max_buffered_bytes} held
    for it; JSON on every error.

    @ivar client_host: the address the connection is counted under (L{FrontDoorSite}).
    @ivar idle_since: when the connection last finished a request and has had nothing
        since (keep-alive), else C{None}.
    """

    _header_timer = None
    _body_timer = None
    _send_timer = None
    _in_body = False
    _body_paused = False
    client_host = None
    idle_since = None

    def connectionMade(self) -> None:
        site = self.site
        config = site.config
        # twisted.web logs every idle connection it times out: throttled, as any client
        # can open many.
        self._log = site.client_log
        super().connectionMade()
        # twisted.web asks for both addresses on every request: one syscall each, once.
        self._host, self._peer = self.transport.getHost(), self.transport.getPeer()
        site.channels.add(self)
        self.totalHeadersSize = config.max_header_bytes
        self.MAX_LENGTH = config.max_header_bytes
        # Half of the bytes held for the connection is its send buffer (beyond, the
        # backend is paused), half what one read of the backend may add to it.
        self.transport.bufferSize = config.max_buffered_bytes // 2
        # The first request's headers are due from the start: a connection that sends
        # nothing is a connection that holds a descriptor for nothing.
        self._header_timer = self.callLater(config.header_timeout, self._headers_too_slow)

    def dataReceived(self, data: bytes) -> None:
        if self._in_body:
            if self._body_timer is not None:
                self._body_timer.reset(self.site.config.body_timeout)
        elif self._header_timer is None and self.line_mode and not self._handlingRequest:
            self.idle_since = None
            self._header_timer = self.callLater(self.site.config.header_timeout,
                                                self._headers_too_slow)
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

    def writeHeaders(self, version, code, reason, headers) -> None:
        # RFC 9110 section 6.2: a response carries the highest version the server
        # conforms to within the request's major version, HTTP/1.1 (twisted.web would
        # echo an HTTP/1.0 client's). What the answer may use still follows the
        # client's: no chunked body, no keep-alive unless asked, for HTTP/1.0.
        super().writeHeaders(b"HTTP/1.1", code, reason, headers)

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
        if self.length != 0 and self.transport is not None and not self.transport.disconnecting:
            # The body has its own deadline, which stops while the proxy pauses the
            # client for a slow backend; twisted.web's idle timeout would not.
            if self.timeOut:
                self._savedTimeOut = self.setTimeout(None)
            self._in_body = True
            self._body_timer = self.callLater(self.site.config.body_timeout,
                                              self._body_too_slow)

    def allContentReceived(self) -> None:
        self._end_body()
        super().allContentReceived()

    def requestDone(self, request) -> None:
        super().requestDone(request)
        if self.persistent and not self.requests:
            self.idle_since = self.site.reactor.seconds()

    # The request body's progress -------------------------------------------------

    def pause_body(self) -> None:
        """
        Stop reading the request body (its backend is slower than the client): the time
        until L{resume_body} is the backend's, not the client's.
        """
        if not self._body_paused:
            self._body_paused = True
            self._body_timer = cancel_call(self._body_timer)
            self.transport.pauseProducing()

    def resume_body(self) -> None:
        if self._body_paused:
            self._body_paused = False
            self.transport.resumeProducing()
            if self._in_body and self._body_timer is None:
                self._body_timer = self.callLater(self.site.config.body_timeout,
                                                  self._body_too_slow)

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self._in_body:
            self._refuse(408, f"the request body stalled for {self.site.config.body_timeout:g}s")

    def _end_body(self) -> None:
        self._in_body = False
        self._body_timer = cancel_call(self._body_timer)

    # The client taking its response ----------------------------------------------

    def pauseProducing(self) -> None:
        # The transport's buffer is full: the client is not reading. It gets
        # send_timeout to take it, else its connection (and its backend request) goes.
        super().pauseProducing()
        if self._send_timer is None:
            self._send_timer = self.callLater(self.site.config.send_timeout, self._not_reading)

    def resumeProducing(self) -> None:
        self._send_timer = cancel_call(self._send_timer)
        super().resumeProducing()

    def _not_reading(self) -> None:
        self._send_timer = None
        self._log.info("cutting a client that read nothing for {seconds:g}s: {peer}",
                       seconds=self.site.config.send_timeout, peer=str(self._peer),
                       event="proxy.send_timeout")
        self.abort()

    # Ending ------------------------------------------------------------------------

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.line_mode and not self._handlingRequest:
            self._refuse(408, "request headers not received within "
                              f"{self.site.config.header_timeout:g}s")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self._refuse(400, "malformed HTTP request")

    def _refuse(self, code: int, message: str) -> None:
        """
        Answer a request twisted.web gave up on (or never saw), and close.
        """
        self._cancel_header_timer()
        self._end_body()
        self.transport.write(error_answer(code, message).raw(self.site.reactor.seconds()))
        self.loseConnection()
        # Ignore whatever else the client sends; the connection is closing.
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda *args: None

    def _cancel_header_timer(self) -> None:
        self._header_timer = cancel_call(self._header_timer)

    def connectionLost(self, reason) -> None:
        self._cancel_header_timer()
        self._end_body()
        self._send_timer = cancel_call(self._send_timer)
        self.site.forget(self)
        super().connectionLost(reason)

    def taken_over(self) -> None:
        """
        Another protocol (a relayed WebSocket) has the connection now: it no longer
        counts here, and twisted.web's timers and producer are stopped.
        """
        self._cancel_header_timer()
        self._end_body()
        self._send_timer = cancel_call(self._send_timer)
        self.setTimeout(None)
        self.site.forget(self)

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


class BodyReads:
    """
    The client side of a streamed request body (what L{StreamingBody} pauses): its
    channel, whose body deadline stops while the proxy itself is not reading.
    """

    __slots__ = ("_channel",)

    def __init__(self, channel: FrontDoorChannel) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        self._channel.pause_body()

    def resumeProducing(self) -> None:
        self._channel.resume_body()


class RefusedConnection(Protocol):
    """
    A connection beyond a limit: it gets a 503 at once, its request (if any) is read and
    dropped so that closing does not reset the answer away, and it is cut after
    L{LINGER} seconds whatever the client does.
    """

    LINGER = 2.0

    def __init__(self, answer: bytes, clock) -> None:
        self._answer = answer
        self._clock = clock
        self._cut = None

    def connectionMade(self) -> None:
        self.transport.write(self._answer)
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            self.transport.loseConnection()
        self._cut = self._clock.callLater(self.LINGER, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self._cut = cancel_call(self._cut)


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
    #: The agent the request's host routes to (for metrics), once it is known.
    agent_name = None

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
    The proxy listener's Site: tracks its channels so shutdown can drain them, and
    counts them, in all and per client address, against the proxy's limits.
    """

    protocol = FrontDoorChannel
    requestFactory = FrontDoorRequest
    displayTracebacks = False

    def __init__(self, resource, config: ProxyConfig, *, reactor) -> None:
        super().__init__(resource, timeout=config.idle_connection_timeout, reactor=reactor)
        self.config = config
        self.channels = ConnectionRegistry()
        #: Counted channels by client address.
        self._per_client: dict[str, int] = {}
        #: What twisted.web logs about one client's connections and requests.
        self.client_log = ThrottledLog(Logger(namespace="twisted.web.http"), reactor)

    def reconfigure(self, config: ProxyConfig) -> None:
        """
        Take up changed proxy settings (a reload): new connections and requests get
        them; timers already running keep theirs.
        """
        self.config = config
        self.timeOut = config.idle_connection_timeout

    @property
    def header_timeout(self) -> float:
        return self.config.header_timeout

    @property
    def max_header_bytes(self) -> int:
        return self.config.max_header_bytes

    def buildProtocol(self, addr):
        config = self.config
        host = getattr(addr, "host", None)
        if len(self.channels) >= config.max_connections and not self._close_idle_one():
            return self._refused(f"the proxy has {config.max_connections} connections "
                                 "open, the most it takes")
        if (host is not None and self._per_client.get(host, 0) >= config.max_connections_per_client
                and not is_trusted(host, config.trusted_proxies)
                and not self._close_idle_one(host)):
            return self._refused(f"{config.max_connections_per_client} connections from "
                                 "your address are open, the most allowed")
        channel = super().buildProtocol(addr)
        if host is not None:
            channel.client_host = host
            self._per_client[host] = self._per_client.get(host, 0) + 1
        return channel

    def forget(self, channel: FrontDoorChannel) -> None:
        """
        C{channel} closed, or is another protocol's now: it counts no more.
        """
        self.channels.discard(channel)
        host, channel.client_host = channel.client_host, None
        if host is not None:
            left = self._per_client[host] - 1
            if left:
                self._per_client[host] = left
            else:
                del self._per_client[host]

    def _close_idle_one(self, host: str | None = None) -> bool:
        """
        At a limit, close the connection idle longest between requests (of the client at
        C{host}, for its own limit), as nginx does: idle keep-alive connections never
        keep a new one out (browsers behind one NAT keep several each).
        """
        idle = [channel for channel in self.channels if channel.idle_since is not None
                and (host is None or channel.client_host == host)]
        if not idle:
            return False
        oldest = min(idle, key=lambda channel: channel.idle_since)
        oldest.idle_since = None
        oldest.loseConnection()
        return True

    def _refused(self, message: str) -> RefusedConnection:
        self.client_log.info("refusing a connection: {message}", message=message,
                             event="proxy.connection_refused")
        answer = error_answer(503, message, ((b"Retry-After", b"%d" % self.config.retry_after),))
        return RefusedConnection(answer.raw(self.reactor.seconds()), self.reactor)

    def log(self, request) -> None:
        """
        No access log line per request: proxied traffic is counted in metrics, and one
        formatted line per request costs more than the proxying itself.
        """
