"""
One request relayed to one backend, both bodies streamed with flow control.
"""

from __future__ import annotations

from twisted.internet import error as net
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from orchestrator.flows import cancel_call
from orchestrator.http.answers import Answer, error_answer
from orchestrator.http.bodies import DiscardedBody, StreamingBody
from orchestrator.http.client import BackendBusy
from orchestrator.http.errors import describe_connection_error
from orchestrator.http.headers import http_date, strip_hop_by_hop
from orchestrator.http.response import BadResponse
from orchestrator.http.throttle import ThrottledLog
from orchestrator.interfaces import IRequestHandler


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


@implementer(IRequestHandler)
class BackendExchange:
    """
    One request relayed to one backend, from the request headers to the last body byte.
    """

    def __init__(self, agent, request, body: StreamingBody | None, *, client, clock,
                 response_timeout: float, log: ThrottledLog, retry_after: int = 1) -> None:
        """
        @param client: the agent's backend client (an L{IAgent}).
        @param response_timeout: seconds from the end of the request until the backend's
            response head, else 504.
        @param log: for backend failures, which a client can make happen at will.
        @param retry_after: the C{Retry-After} of a 503 (the agent's backend is busy).
        """
        self._retry_after = retry_after
        self.agent = agent
        self._log = log
        self._client = client
        self._clock = clock
        self._response_timeout = response_timeout
        self.request = request
        self._body = body
        self.client_gone = False
        self.body_transport = None
        self._response = None
        self._client_ready = body is None
        self._waiting: Deferred | None = None
        self._timeout = None
        self._finished = False
        agent.request_started()
        request.notifyFinish().addBoth(self._client_finished)

    @property
    def request_body(self):
        """
        The upload streaming to the backend; a body-less request has none to take.
        """
        return self._body if self._body is not None else DiscardedBody()

    def start(self, url: bytes, headers) -> None:
        """
        Send the request to C{url} (the backend's, with the client's path and query),
        once its body (if any) is complete or has a buffer's worth: an upload that
        trickles in holds no backend connection meanwhile.
        """
        if self._body is None:
            self._send(url, headers)
        else:
            self._body.when_ready(lambda: self._send(url, headers))

    def _send(self, url: bytes, headers) -> None:
        if self.client_gone:
            return
        self._waiting = self._client.request(self.request.method, url, headers, self._body)
        self._waiting.addCallbacks(self._got_response, self._failed)
        if self._client_ready:
            self._arm_timeout()

    def client_complete(self) -> None:
        """
        The client's request (headers and body) is complete: the response may be written.
        """
        self._client_ready = True
        if self._body is not None:
            self._body.complete()
        if self._response is not None:
            self._relay(self._response)
        elif self._waiting is not None:
            self._arm_timeout()

    def _arm_timeout(self) -> None:
        # Counted from the end of the request body, so a long upload is not a slow backend.
        if self._timeout is not None:
            return
        self._timeout = self._clock.callLater(self._response_timeout, self._timed_out)

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
        headers = strip_hop_by_hop(response.headers, into=request.responseHeaders)
        if not headers.hasHeader(b"date"):
            # A proxy may add the Date its origin left out (RFC 9110 section 6.6.1).
            headers.setRawHeaders(b"Date", [http_date(self._clock.seconds())])
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
            self._log.info("backend of {agent} failed mid-response: {reason}",
                           agent=self.agent.name, throttle_key=self.agent.name,
                           reason=describe_connection_error(reason.value))
            request.channel.transport.abortConnection()

    def _failed(self, failure: Failure) -> None:
        self._waiting = None
        self._cancel_timeout()
        if self.client_gone:
            return
        name = self.agent.name
        if (busy := _busy(failure)) is not None:
            code, message = 503, f"agent {name} is busy: {busy}"
        elif failure.check(CancelledError):
            code, message = 504, (f"agent {name} did not answer within "
                                  f"{self._response_timeout:g}s")
        elif _is_timeout(failure):
            code, message = 504, f"agent {name} did not accept a connection in time"
        elif (bad := _bad_response(failure)) is not None:
            code, message = 502, f"agent {name} sent an invalid HTTP response: {bad}"
        else:
            code, message = 502, f"agent {name} is unreachable: {describe_connection_error(failure.value)}"
        headers = ((b"Retry-After", b"%d" % self._retry_after),) if code == 503 else ()
        answer = error_answer(code, message, headers, **self.agent.public_health())
        if self._body is not None:
            # Whatever of the upload is still coming is read and dropped, not held.
            self._body.stopProducing()
        if self._client_ready:
            self._answer_locally(answer)
        else:
            self._response = answer

    def _answer_locally(self, answer: Answer) -> None:
        self.request.write(answer.apply(self.request, self._clock.seconds()))
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
            if self._body is not None:
                self._body.stopProducing()
        self.agent.request_finished()

    def _cancel_timeout(self) -> None:
        self._timeout = cancel_call(self._timeout)

    def render(self, request):
        """
        Called once the client's request is complete: relay the response (or the error)
        that may have arrived before the body ended, or wait for it.
        """
        pending = self._response
        if isinstance(pending, Answer):
            self._response = None
            self._answer_locally(pending)
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


def _busy(failure: Failure) -> BackendBusy | None:
    return failure.value if failure.check(BackendBusy) else None


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


class Untracked:
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
