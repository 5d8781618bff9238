"""
One way to reach a backend (orchestrator.http.endpoints), for the client and the relay.
"""

from __future__ import annotations

from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from orchestrator.config.model import Backend
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.http.spread import SpreadEndpoint
from tests.helpers import MemoryNetwork


class EndpointTests(SynchronousTestCase):
    def test_one_endpoint_per_address_of_the_right_kind(self) -> None:
        endpoints = BackendEndpoints(MemoryReactor(), connect_timeout=5)
        v4 = endpoints.get(b"http", b"127.0.0.1:8080")
        self.assertIs(endpoints.get(b"http", b"127.0.0.1:8080"), v4)
        self.assertIsInstance(v4, TCP4ClientEndpoint)
        self.assertEqual((v4._host, v4._port), ("127.0.0.1", 8080))
        v6 = endpoints.get(b"http", b"[::1]:9000")
        self.assertIsInstance(v6, TCP6ClientEndpoint)
        self.assertEqual((v6._host, v6._port), ("::1", 9000))
        named = endpoints.get(b"http", b"tasks.demo")
        self.assertIsInstance(named, SpreadEndpoint)
        self.assertEqual(named._port, 80)

    def test_the_relay_gets_the_endpoint_the_client_gets_for_a_backend(self) -> None:
        endpoints = BackendEndpoints(MemoryReactor(), connect_timeout=5)
        backend = Backend("http", "10.0.0.5", 8081)
        self.assertIs(endpoints.for_backend(backend), endpoints.get(b"http", b"10.0.0.5:8081"))
        v6 = Backend("http", "fd00::5", 8081)
        self.assertIs(endpoints.for_backend(v6), endpoints.get(b"http", b"[fd00::5]:8081"))

    def test_https_backends_get_tls_from_the_one_policy(self) -> None:
        policy = RecordingPolicy()
        reactor = MemoryReactorClock()
        endpoints = BackendEndpoints(reactor, connect_timeout=5, tls_policy=policy)
        endpoints.for_backend(Backend("https", "agent.example.com", 8443)).connect(
            Factory.forProtocol(Protocol))
        self.assertEqual(policy.asked, [(b"agent.example.com", 8443)])
        self.assertIsInstance(MemoryNetwork(reactor).factory(), TLSMemoryBIOFactory)

    def test_a_new_connect_timeout_makes_endpoints_anew(self) -> None:
        reactor = MemoryReactorClock()
        endpoints = BackendEndpoints(reactor, connect_timeout=5)
        before = endpoints.get(b"http", b"127.0.0.1:8080")
        endpoints.set_connect_timeout(5)
        self.assertIs(endpoints.get(b"http", b"127.0.0.1:8080"), before)
        endpoints.set_connect_timeout(2)
        endpoints.get(b"http", b"127.0.0.1:8080").connect(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.tcpClients[0][3], 2)


@implementer(IPolicyForHTTPS)
class RecordingPolicy:
    """
    A browser's TLS policy that records the names it is asked for.
    """

    def __init__(self) -> None:
        self.asked = []
        self._policy = BrowserLikePolicyForHTTPS()

    def creatorForNetloc(self, hostname, port):
        self.asked.append((hostname, port))
        return self._policy.creatorForNetloc(hostname, port)
