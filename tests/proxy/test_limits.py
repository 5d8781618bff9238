"""
The front door's deadlines and limits (orchestrator.proxy.frontdoor): idle connections,
stalled bodies, clients that read nothing, bytes held per connection, connections in
all and per client address, connections to one agent's backend.
"""

import ipaddress

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import ProxyConfig
from tests.helpers import connect_client
from tests.proxy.harness import ProxyHarness, Response

GET = b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n"


class IdleConnectionTests(SynchronousTestCase):
    """
    Issue item 2: a connection that sends nothing got the 60 s idle timeout, the header
    deadline starting only at its first byte.
    """

    def test_a_connection_that_sends_nothing_gets_408_at_the_header_timeout(self):
        harness = ProxyHarness()
        _, transport = harness.connect()
        harness.clock.advance(9.9)
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(0.1)
        self.assertEqual(Response(transport.value()).code, 408)
        self.assertTrue(transport.disconnecting)

    def test_between_requests_a_keep_alive_connection_gets_the_idle_timeout(self):
        harness = ProxyHarness(replicas=1, config=ProxyConfig(idle_connection_timeout=60))
        protocol, transport = harness.send(GET)
        transport.clear()
        harness.clock.advance(30)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(30)
        self.assertTrue(transport.disconnecting)

    def test_a_later_requests_headers_are_due_from_its_first_byte(self):
        harness = ProxyHarness(replicas=1)
        protocol, transport = harness.send(GET)
        harness.clock.advance(20)
        transport.clear()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        harness.clock.advance(10)
        self.assertEqual(Response(transport.value()).code, 408)


class BodyDeadlineTests(SynchronousTestCase):
    """
    Issue item 3: a body that trickles in had no deadline, and held a backend connection
    all the while.
    """

    HEAD = b"POST /up HTTP/1.1\r\nHost: alpha.example.com\r\nContent-Length: %d\r\n\r\n"

    def test_a_stalled_body_gets_408_and_the_backend_is_never_asked(self):
        harness = ProxyHarness(replicas=1)
        protocol, transport = harness.send(self.HEAD % 100 + b"abc")
        harness.clock.advance(29.9)
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(0.1)
        harness.flush()
        response = Response(transport.value())
        self.assertEqual(response.code, 408)
        self.assertIn("30s", response.json()["error"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual((harness.backend.requests, harness.pumps), ([], []))

    def test_each_byte_that_arrives_restarts_the_deadline(self):
        harness = ProxyHarness(replicas=1)
        protocol, transport = harness.send(self.HEAD % 3)
        for byte in (b"a", b"b"):
            harness.clock.advance(20)
            protocol.dataReceived(byte)
        harness.clock.advance(20)
        protocol.dataReceived(b"c")
        harness.flush()
        self.assertEqual(Response(transport.value()).code, 200)
        self.assertEqual(harness.backend.requests[0].body, b"abc")

    def test_a_body_still_short_of_a_buffer_opens_no_backend_connection(self):
        harness = ProxyHarness(replicas=1, serving=False)
        harness.send(self.HEAD % 1000 + b"x" * 10)
        self.assertEqual(harness.network.pending(), [])

    def test_a_body_with_a_buffers_worth_goes_to_the_backend_before_it_ends(self):
        config = ProxyConfig(max_buffered_bytes=8192)
        harness = ProxyHarness(replicas=1, serving=False, config=config)
        harness.send(self.HEAD % 100000 + b"x" * 8192)
        self.assertEqual(len(harness.network.pending()), 1)

    def test_time_the_proxy_pauses_the_client_for_the_backend_does_not_count(self):
        config = ProxyConfig(max_buffered_bytes=8192)
        harness = ProxyHarness(replicas=1, serving=False, config=config)
        protocol, transport = harness.send(self.HEAD % 100000 + b"x" * 9000)
        harness.network.accept()
        (request,) = protocol.requests
        request.content.pauseProducing()  # the backend's socket is full
        self.assertEqual(transport.producerState, "paused")
        harness.clock.advance(100)
        self.assertFalse(transport.disconnecting)
        request.content.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        harness.clock.advance(30)
        self.assertEqual(Response(transport.value()).code, 408)

    def test_a_body_answered_locally_has_the_deadline_too(self):
        harness = ProxyHarness()
        _, transport = harness.send(
            b"POST / HTTP/1.1\r\nHost: nobody.example.com\r\nContent-Length: 10\r\n\r\nab")
        harness.clock.advance(30)
        self.assertEqual(Response(transport.value()).code, 408)


class SendDeadlineTests(SynchronousTestCase):
    """
    Issue item 1: a response streaming to a client that never reads held its memory,
    its connection and its backend request for good.
    """

    def streaming(self, **config):
        harness = ProxyHarness(replicas=1, config=ProxyConfig(**config))
        harness.backend.hold = True
        protocol, transport = harness.send(GET)
        (held,) = harness.backend.held
        held.write(b"x" * 1000)
        harness.flush()
        return harness, protocol, transport, held

    def test_a_client_that_takes_nothing_is_cut_after_the_send_timeout(self):
        harness, protocol, transport, held = self.streaming()
        protocol.pauseProducing()  # what the transport does when its buffer is full
        harness.clock.advance(29.9)
        self.assertFalse(transport.disconnected)
        harness.clock.advance(0.1)
        self.assertTrue(transport.disconnected)  # aborted

    def test_its_backend_request_is_cancelled(self):
        harness, protocol, transport, held = self.streaming()
        protocol.pauseProducing()
        harness.clock.advance(30)
        protocol.connectionLost(Failure(ConnectionLost()))
        harness.flush()
        self.assertTrue(held.channel is None or held.channel.transport.disconnected)
        self.assertEqual(harness.agent.in_flight, 0)

    def test_a_client_that_takes_its_buffer_in_time_keeps_its_connection(self):
        harness, protocol, transport, _ = self.streaming(send_timeout=10)
        for _ in range(5):
            protocol.pauseProducing()
            harness.clock.advance(9)
            protocol.resumeProducing()
        self.assertFalse(transport.disconnected)

    def test_a_connection_holds_at_most_half_the_buffered_bytes_in_its_send_buffer(self):
        harness = ProxyHarness(config=ProxyConfig(max_buffered_bytes=20000))
        _, transport = harness.connect()
        self.assertEqual(transport.bufferSize, 10000)


class ConnectionCapTests(SynchronousTestCase):
    """
    Issue item 1: nothing capped connections; one machine's could exhaust the memory
    (or the descriptors) of the process.
    """

    def test_beyond_the_cap_per_client_a_connection_gets_503_and_is_closed(self):
        harness = ProxyHarness(config=ProxyConfig(max_connections_per_client=2))
        for _ in range(2):
            connect_client(harness.site, "198.51.100.7")
        _, transport = connect_client(harness.site, "198.51.100.7")
        response = Response(transport.value())
        self.assertEqual(response.code, 503)
        self.assertIn("your address", response.json()["error"])
        self.assertEqual(response.header(b"retry-after"), b"3")
        self.assertTrue(transport.disconnecting)

    def test_other_clients_are_not_refused(self):
        harness = ProxyHarness(config=ProxyConfig(max_connections_per_client=2))
        for _ in range(2):
            connect_client(harness.site, "198.51.100.7")
        _, transport = connect_client(harness.site, "198.51.100.8")
        self.assertEqual(transport.value(), b"")

    def test_a_closed_connection_frees_its_place(self):
        harness = ProxyHarness(config=ProxyConfig(max_connections_per_client=1))
        protocol, _ = connect_client(harness.site, "198.51.100.7")
        protocol.connectionLost(Failure(ConnectionLost()))
        _, transport = connect_client(harness.site, "198.51.100.7")
        self.assertEqual(transport.value(), b"")

    def test_at_its_cap_a_clients_own_idle_connection_makes_room(self):
        harness = ProxyHarness(replicas=1, config=ProxyConfig(max_connections_per_client=2))
        idle, idle_transport = connect_client(harness.site, "198.51.100.7")
        idle.dataReceived(GET)
        harness.flush()
        other, other_transport = connect_client(harness.site, "198.51.100.8")
        other.dataReceived(GET)
        harness.flush()
        connect_client(harness.site, "198.51.100.7")
        _, transport = connect_client(harness.site, "198.51.100.7")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(idle_transport.disconnecting)
        self.assertFalse(other_transport.disconnecting)  # another client's: kept

    def test_a_trusted_proxy_is_not_capped_per_client(self):
        config = ProxyConfig(max_connections_per_client=1,
                             trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
        harness = ProxyHarness(config=config)
        for _ in range(3):
            _, transport = connect_client(harness.site, "10.0.0.2")
        self.assertEqual(transport.value(), b"")

    def test_beyond_the_total_cap_a_connection_gets_503(self):
        harness = ProxyHarness(config=ProxyConfig(max_connections=2))
        connect_client(harness.site, "198.51.100.1")
        connect_client(harness.site, "198.51.100.2")
        _, transport = connect_client(harness.site, "198.51.100.3")
        self.assertEqual(Response(transport.value()).code, 503)

    def test_at_the_total_cap_the_connection_idle_longest_makes_room(self):
        harness = ProxyHarness(replicas=1, config=ProxyConfig(max_connections=2))
        first, first_transport = connect_client(harness.site, "198.51.100.1")
        first.dataReceived(GET)
        harness.flush()
        harness.clock.advance(1)
        second, second_transport = connect_client(harness.site, "198.51.100.2")
        second.dataReceived(GET)
        harness.flush()
        _, transport = connect_client(harness.site, "198.51.100.3")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(first_transport.disconnecting)
        self.assertFalse(second_transport.disconnecting)

    def test_a_refused_connection_is_cut_if_its_client_does_not_close(self):
        harness = ProxyHarness(config=ProxyConfig(max_connections=1))
        connect_client(harness.site, "198.51.100.1")
        _, transport = connect_client(harness.site, "198.51.100.2")
        harness.clock.advance(2)
        self.assertTrue(transport.disconnected)


class BackendConnectionCapTests(SynchronousTestCase):
    """
    Issue item 3: nothing bounded the connections to one agent's backend.
    """

    def test_requests_beyond_the_cap_wait_for_a_connection_to_come_free(self):
        harness = ProxyHarness(replicas=1, config=ProxyConfig(max_backend_connections=2))
        harness.backend.hold = True
        clients = [harness.send(GET)[1] for _ in range(3)]
        self.assertEqual(len(harness.backend.held), 2)
        harness.backend.hold = False
        first = harness.backend.held[0]
        first.write(b"done")
        first.finish()
        harness.flush()
        self.assertEqual(Response(clients[0].value()).code, 200)
        self.assertEqual(Response(clients[2].value()).code, 200)
        self.assertEqual(len(harness.pumps), 2)  # the third went on a connection that came free

    def test_a_request_that_waits_longer_than_the_connect_timeout_gets_503(self):
        config = ProxyConfig(max_backend_connections=1, connect_timeout=5)
        harness = ProxyHarness(replicas=1, config=config)
        harness.backend.hold = True
        harness.send(GET)
        _, transport = harness.send(GET)
        harness.clock.advance(5)
        response = Response(transport.value())
        self.assertEqual(response.code, 503)
        self.assertIn("busy", response.json()["error"])
        self.assertEqual(response.header(b"retry-after"), b"3")

    def test_slow_uploads_hold_no_backend_connection(self):
        harness = ProxyHarness(replicas=1, config=ProxyConfig(max_backend_connections=2))
        for _ in range(10):
            harness.send(b"POST / HTTP/1.1\r\nHost: alpha.example.com\r\n"
                         b"Content-Length: 1000\r\n\r\nx")
        _, transport = harness.send(GET)
        self.assertEqual(Response(transport.value()).code, 200)
