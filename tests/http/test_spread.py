"""
A backend named by several addresses (orchestrator.http.spread): connections in turn
over the addresses, an address that failed avoided for a while, a failed connect tried
on the next address, early, and cancellation. A memory reactor and a scripted resolver.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import IHostnameResolver, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.http.spread import ATTEMPT_DELAY, AVOID_FOR, SpreadEndpoint


@implementer(IHostnameResolver)
class ScriptedResolver:
    """
    Answers every name with C{addresses} (in that order), at once.
    """

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.asked: list[str] = []

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        self.asked.append(hostName)
        receiver.resolutionBegan(None)
        for address in self.addresses:
            receiver.addressResolved(IPv4Address("TCP", address, portNumber))
        receiver.resolutionComplete()
        return None


class SpreadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = ScriptedResolver("10.0.0.3", "10.0.0.2")
        self.reactor.nameResolver = self.resolver
        self.endpoint = SpreadEndpoint(self.reactor, "tasks.demo", 8081, timeout=5)
        self.results: list = []

    def connect(self):
        deferred = self.endpoint.connect(Factory.forProtocol(Protocol))
        deferred.addBoth(self.results.append)
        return deferred

    def attempts(self) -> list[str]:
        return [host for host, *_ in self.reactor.tcpClients]

    def accept(self, index: int = -1) -> Protocol:
        """
        The attempt C{index} connects.
        """
        _, _, factory, _, _ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        return protocol

    def refuse(self, index: int = -1, reason=None) -> None:
        _, _, factory, _, _ = self.reactor.tcpClients[index]
        connector = self.reactor.connectors[index]
        factory.clientConnectionFailed(connector, reason or ConnectionRefusedError())

    def test_provides_a_client_endpoint(self) -> None:
        self.assertTrue(verifyObject(IStreamClientEndpoint, self.endpoint))

    def test_the_name_is_resolved_at_each_connection(self) -> None:
        self.connect()
        self.accept()
        self.connect()
        self.assertEqual(self.resolver.asked, ["tasks.demo", "tasks.demo"])

    def test_connections_take_the_addresses_in_turn(self) -> None:
        for _ in range(4):
            self.connect()
            self.accept()
        self.assertEqual(self.attempts(), ["10.0.0.3", "10.0.0.2", "10.0.0.3", "10.0.0.2"])
        self.assertEqual(len(self.results), 4)
        self.assertTrue(all(isinstance(result, Protocol) for result in self.results))

    def test_a_refused_address_is_left_for_the_next_at_once_and_avoided(self) -> None:
        self.connect()
        first = self.attempts()[0]
        self.refuse(0)
        self.assertEqual(len(self.attempts()), 2)  # the next one, without waiting
        self.accept(1)
        self.assertIsInstance(self.results[0], Protocol)
        self.assertEqual(self.endpoint.avoided, (first,))
        # The turn would come back to it: it is avoided while the other answers.
        for _ in range(3):
            self.connect()
            self.accept()
        self.assertNotIn(first, self.attempts()[2:])

    def test_an_avoided_address_is_tried_again_after_a_while(self) -> None:
        self.connect()
        first = self.attempts()[0]
        self.refuse(0)
        self.accept(1)
        self.reactor.advance(AVOID_FOR)
        self.assertEqual(self.endpoint.avoided, ())
        for _ in range(2):
            self.connect()
            self.accept()
        self.assertIn(first, self.attempts()[2:])

    def test_a_silent_address_has_the_next_tried_beside_it_and_the_first_to_connect_wins(
            self) -> None:
        self.connect()
        self.assertEqual(len(self.attempts()), 1)
        self.reactor.advance(ATTEMPT_DELAY)
        self.assertEqual(len(self.attempts()), 2)
        self.accept(1)
        self.assertIsInstance(self.results[0], Protocol)
        # The silent one is given up.
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_every_address_failing_fails_with_the_last_reason(self) -> None:
        self.connect()
        self.refuse(0)
        self.refuse(1, TimeoutError())
        [failure] = self.results
        failure.trap(TimeoutError)
        self.assertEqual(len(self.endpoint.avoided), 2)

    def test_all_avoided_are_still_tried(self) -> None:
        self.connect()
        self.refuse(0)
        self.refuse(1)
        self.connect()
        self.assertEqual(len(self.attempts()), 3)

    def test_a_name_without_addresses_fails_saying_so(self) -> None:
        self.resolver.addresses = []
        self.connect()
        [failure] = self.results
        failure.trap(DNSLookupError)
        self.assertIn("tasks.demo has no address", str(failure.value))

    def test_cancel_gives_up_every_attempt_and_the_timer(self) -> None:
        deferred = self.connect()
        self.reactor.advance(ATTEMPT_DELAY)
        deferred.cancel()
        self.assertTrue(all(connector.stoppedConnecting
                            for connector in self.reactor.connectors))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        [failure] = self.results
        failure.trap(ConnectingCancelledError, CancelledError)
        self.assertEqual(self.endpoint.avoided, ())  # a cancel is not the address's fault

    def test_addresses_known_down_are_tried_last(self) -> None:
        for _ in range(3):
            self.endpoint.connect(Factory.forProtocol(Protocol), frozenset({"10.0.0.2"}))
            self.accept()
        self.assertEqual(self.attempts(), ["10.0.0.3"] * 3)

    def test_an_address_known_down_is_still_tried_when_the_others_fail(self) -> None:
        self.endpoint.connect(Factory.forProtocol(Protocol), frozenset({"10.0.0.2"})
                              ).addBoth(self.results.append)
        self.refuse(0)
        self.assertEqual(self.attempts(), ["10.0.0.3", "10.0.0.2"])
        self.accept(1)
        self.assertIsInstance(self.results[0], Protocol)

    def test_an_agents_endpoint_asks_it_at_each_connection(self) -> None:
        down = {"now": frozenset({"10.0.0.3"})}
        endpoints = BackendEndpoints(self.reactor, connect_timeout=5)
        endpoint = endpoints.get(b"http", b"tasks.demo:8081", lambda: down["now"])
        endpoint.connect(Factory.forProtocol(Protocol))
        down["now"] = frozenset({"10.0.0.2"})
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(self.attempts(), ["10.0.0.2", "10.0.0.3"])

    def test_an_ip_backend_ignores_what_is_known_down(self) -> None:
        endpoints = BackendEndpoints(self.reactor, connect_timeout=5)
        plain = endpoints.get(b"http", b"10.0.0.2:8081")
        self.assertIs(endpoints.get(b"http", b"10.0.0.2:8081", lambda: frozenset()), plain)
