"""
The front door (orchestrator.proxy.frontdoor): what a hostile or careless client gets
for broken, slow or oversized requests, and that nothing a client repeats grows the log.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import HttpPathLog
from tests.proxy.harness import ProxyHarness, RawBackend, Response


class FrontDoorTests(SynchronousTestCase):
    def test_missing_host_is_400(self):
        harness = ProxyHarness()
        _, transport = harness.send(b"GET / HTTP/1.1\r\n\r\n")
        response = Response(transport.value())
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json(), {"error": "missing Host header"})

    def test_two_host_headers_are_400(self):
        harness = ProxyHarness()
        _, transport = harness.send(
            b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\nHost: other.example.com\r\n\r\n")
        self.assertEqual(Response(transport.value()).json(), {"error": "more than one Host header"})

    def test_invalid_host_is_400(self):
        response = ProxyHarness().get(host=b"alpha.example.com/evil")
        self.assertEqual((response.code, response.json()), (400, {"error": "invalid Host header"}))

    def test_trickled_headers_are_cut_off_with_408(self):
        harness = ProxyHarness()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n")
        for _ in range(9):
            harness.clock.advance(1)
            protocol.dataReceived(b"X: y\r\n")
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(1)
        response = Response(transport.value())
        self.assertEqual(response.code, 408)
        self.assertIn("10s", response.json()["error"])
        self.assertTrue(transport.disconnecting)

    def test_oversized_headers_get_431(self):
        harness = ProxyHarness()
        filler = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n" + filler + b"\r\n")
        response = Response(transport.value())
        self.assertEqual(response.code, 431)
        self.assertIn("16384", response.json()["error"])

    def test_one_huge_header_line_gets_431(self):
        harness = ProxyHarness()
        _, transport = harness.send(
            b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\nX-Big: " + b"v" * 20000 + b"\r\n\r\n")
        self.assertEqual(Response(transport.value()).code, 431)

    def test_smuggling_with_length_and_chunked_is_400(self):
        harness = ProxyHarness(replicas=1)
        _, transport = harness.send(
            b"POST / HTTP/1.1\r\nHost: alpha.example.com\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        response = Response(transport.value())
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json(), {"error": "malformed HTTP request"})
        self.assertEqual(harness.backend.requests, [])

    def test_two_content_lengths_are_400(self):
        harness = ProxyHarness(replicas=1)
        _, transport = harness.send(
            b"POST / HTTP/1.1\r\nHost: alpha.example.com\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\nab")
        self.assertEqual(Response(transport.value()).code, 400)


    def test_an_http_1_0_request_is_answered_in_http_1_1_without_chunks_then_closed(self):
        # RFC 9110 section 6.2: the server's own version within the client's major one
        # (the atheris target found twisted.web echoing "HTTP/1.0"); RFC 9112 section 9.3:
        # an HTTP/1.0 request without keep-alive ends its connection.
        harness = ProxyHarness(replicas=1)
        protocol, transport = harness.send(b"GET / HTTP/1.0\r\nHost: alpha.example.com\r\n\r\n")
        harness.flush()
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:80])
        self.assertNotIn(b"chunked", answer.lower())
        self.assertTrue(transport.disconnecting)

    def test_a_refusal_to_http_1_0_is_in_http_1_1(self):
        _, transport = ProxyHarness().send(b"2 nnJ HTTP/1.0\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value()[:80])

class TransferCodingTests(SynchronousTestCase):
    """
    RFC 9112 section 6: chunked must be the final transfer coding, once (else 400);
    other codings are not understood (501); HTTP/1.0 has no Transfer-Encoding (400).
    """

    def post(self, codings: bytes, version: bytes = b"HTTP/1.1"):
        harness = ProxyHarness(replicas=1)
        _, transport = harness.send(
            b"POST / " + version + b"\r\nHost: alpha.example.com\r\n" + codings
            + b"\r\n5\r\nhello\r\n0\r\n\r\n")
        return harness, Response(transport.value())

    def assertRefused(self, codings: bytes, code: int, version: bytes = b"HTTP/1.1"):
        harness, response = self.post(codings, version)
        self.assertEqual(response.code, code, codings)
        self.assertIn("error", response.json())
        self.assertEqual(harness.backend.requests, [])

    def test_chunked_is_relayed(self):
        harness, response = self.post(b"Transfer-Encoding: Chunked\r\n")
        self.assertEqual(response.code, 200)
        self.assertEqual(harness.backend.requests[0].body, b"hello")

    def test_identity_is_400(self):
        self.assertRefused(b"Transfer-Encoding: identity\r\n", 400)

    def test_chunked_then_identity_in_two_lines_is_400(self):
        self.assertRefused(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", 400)

    def test_chunked_not_final_is_400(self):
        self.assertRefused(b"Transfer-Encoding: chunked, gzip\r\n", 400)

    def test_chunked_twice_is_400(self):
        self.assertRefused(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400)
        self.assertRefused(b"Transfer-Encoding: chunked, chunked\r\n", 400)

    def test_an_unknown_coding_before_chunked_is_501(self):
        self.assertRefused(b"Transfer-Encoding: gzip, chunked\r\n", 501)
        self.assertRefused(b"Transfer-Encoding: x-custom\r\nTransfer-Encoding: chunked\r\n", 501)

    def test_an_empty_coding_is_400(self):
        self.assertRefused(b"Transfer-Encoding: \r\n", 400)

    def test_transfer_encoding_in_http_1_0_is_400(self):
        self.assertRefused(b"Transfer-Encoding: chunked\r\n", 400, version=b"HTTP/1.0")


# Pieces of requests, good and hostile, that hypothesis strings together.
_PIECES = st.sampled_from([
    b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n", b"POST /x HTTP/1.1\r\n",
    b"GET http://alpha.example.com/ HTTP/1.1\r\n",
    b"GET /\x80 HTTP/1.1\r\n", b"Host: alpha.example.com\r\n", b"Host: a:99999\r\n",
    b"Content-Length: 5\r\n", b"Content-Length: x\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity\r\n", b"Connection: Host, Upgrade\r\n", b"Upgrade: websocket\r\n",
    b"Sec-WebSocket-Version: 8\r\n", b"X_A: 1\r\n", b" folded\r\n", b"\r\n", b"hello",
    b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"\x00", b"\n", b"\r",
])


class FuzzedRequestTests(SynchronousTestCase):
    """
    Whatever bytes arrive, in whatever pieces, the front door answers with HTTP or
    nothing, logs no error, and every deadline leaves the connection closed or usable.
    """

    @given(st.lists(st.one_of(_PIECES, st.binary(max_size=12)), max_size=12), st.data())
    def test_any_bytes_get_http_or_nothing(self, pieces, data):
        harness = ProxyHarness(replicas=1)
        protocol, transport = harness.connect()
        raw = b"".join(pieces)
        at = 0
        while at < len(raw):
            step = data.draw(st.integers(1, max(1, len(raw) - at)))
            protocol.dataReceived(raw[at:at + step])
            at += step
        harness.flush()
        harness.clock.advance(61)  # every deadline fires
        harness.flush()
        answer = transport.value()
        self.assertTrue(answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:80])
        self.assertNotIn(b"Traceback", answer)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertTrue(transport.disconnecting or not protocol.requests)


class LogTests(SynchronousTestCase):
    """
    What one client can repeat at will is logged a bounded number of times.
    """

    def setUp(self):
        self.logged = HttpPathLog(self)

    def idle_connections_time_out(self, harness, count):
        channels = [harness.connect()[0] for _ in range(count)]
        harness.clock.advance(60)
        for channel in channels:  # closed, as the network does after loseConnection
            channel.connectionLost(Failure(ConnectionDone()))

    def test_idle_connections_timing_out_are_logged_once_a_minute(self):
        harness = ProxyHarness()
        self.idle_connections_time_out(harness, 50)
        self.assertEqual(len(self.logged), 1)
        self.idle_connections_time_out(harness, 1)
        self.assertEqual(len(self.logged), 2)
        self.assertEqual(self.logged[1]["suppressed"], 49)

    def test_malformed_requests_are_not_logged(self):
        harness = ProxyHarness()
        for _ in range(50):
            harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n"
                         b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n")
        self.assertEqual(list(self.logged), [])

    def test_head_requests_answered_locally_are_not_logged(self):
        harness = ProxyHarness(swarm=FakeSwarm(auto_run=False))
        for path in (b"/", b"/api/health", b"/api/client.js") * 10:
            harness.send(b"HEAD " + path + b" HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertEqual(list(self.logged), [])

    def test_clients_leaving_mid_response_are_not_logged(self):
        harness = ProxyHarness(replicas=1)
        harness.backend.hold = True
        for _ in range(20):
            protocol, _ = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
            protocol.connectionLost(Failure(ConnectionDone()))
        harness.flush()
        self.assertEqual(list(self.logged), [])

    def test_a_backend_failing_mid_response_is_logged_once_a_minute(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n"))
        for _ in range(50):
            harness.get()
        self.assertEqual(len(self.logged), 1)
        self.assertIn("failed mid-response", self.logged[0]["log_format"])
