"""
The backend client under test, in memory: its real endpoints over a MemoryReactor, the
test playing the backend; a body protocol and a request body under the test's control.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from orchestrator.http.client import BackendClient, BackendPool
from tests.helpers import MemoryNetwork

URL = b"http://127.0.0.1:8080"


def fresh_get(method: bytes = b"GET") -> tuple[list, Protocol]:
    """
    A GET (or C{method}) on a client of its own (hypothesis examples share nothing): the
    list that receives what it fires with, and the protocol of its connection.
    """
    reactor = MemoryReactorClock()
    client = BackendClient(reactor, BackendPool(reactor), 5)
    outcome: list = []
    client.request(method, URL + b"/", Headers(), None).addBoth(outcome.append)
    protocol, _ = MemoryNetwork(reactor).accept()
    return outcome, protocol


class Body(Protocol):
    """
    A body protocol that records what it gets.
    """

    def __init__(self) -> None:
        self.data = b""
        self.reason = None

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.reason = reason


class Producer:
    """
    A request body under the test's control (an IBodyProducer).
    """

    def __init__(self, length=UNKNOWN_LENGTH) -> None:
        self.length = length
        self.consumer = None
        self.done = Deferred()
        self.stopped = False

    def startProducing(self, consumer):
        self.consumer = consumer
        return self.done

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        self.stopped = True


class ClientFixture:
    """
    A test case's client on its real endpoints over a MemoryReactor: the backend
    accepts every connection at once (unless a test says C{accept=False}) and the test
    plays it.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.network = MemoryNetwork(self.clock)
        self.pool = BackendPool(self.clock)
        self.client = BackendClient(self.clock, self.pool, 5)

    def request(self, method=b"GET", path=b"/x?y=1", headers=None, body=None, accept=True):
        deferred = self.client.request(method, URL + path, Headers(headers or {}), body)
        responses, failures = [], []
        deferred.addCallbacks(responses.append, failures.append)
        if accept:
            self.network.accept_all()
        return deferred, responses, failures

    def connections(self):
        """
        Every connection the client opened, accepted at once.
        """
        self.network.accept_all()
        return self.network.accepted

    def connection(self, index=-1):
        return self.connections()[index]

    def answer(self, raw: bytes, index=-1):
        protocol, _ = self.connection(index)
        protocol.dataReceived(raw)

    def body_of(self, response) -> Body:
        body = Body()
        response.deliverBody(body)
        return body

