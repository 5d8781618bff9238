"""
One request relayed to its backend (orchestrator.proxy.exchange), through the proxy's own
client in memory: what the backend gets, what the client gets back, and each way it
fails (refused, slow to connect or to answer, breaking HTTP, the client leaving).
"""


from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import ProxyConfig
from orchestrator.http.headers import http_date
from tests.proxy.harness import ProxyHarness, RawBackend, Response


class RelayTests(SynchronousTestCase):
    def test_ready_agent_gets_the_request_with_forwarded_headers(self):
        harness = ProxyHarness(replicas=1)
        response = harness.get(b"/path?q=1", extra=(
            b"X-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive, X-Private\r\n"
            b"X-Private: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic eA==\r\n"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, b"hello from backend")
        seen = harness.backend.requests[0]
        self.assertEqual(seen.uri, b"/path?q=1")
        self.assertEqual(seen.headers.getRawHeaders(b"x-forwarded-for"), [b"203.0.113.9"])
        self.assertEqual(seen.headers.getRawHeaders(b"x-forwarded-host"), [b"alpha.example.com"])
        self.assertEqual(seen.headers.getRawHeaders(b"host"), [b"alpha.example.com"])
        for hop in (b"x-private", b"keep-alive", b"proxy-authorization"):
            self.assertFalse(seen.headers.hasHeader(hop), hop)

    def test_response_keeps_repeated_headers_and_drops_hop_by_hop(self):
        harness = ProxyHarness(replicas=1)
        response = harness.get()
        self.assertEqual(response.headers[b"set-cookie"], [b"a=1", b"b=2"])
        self.assertIsNone(response.header(b"keep-alive"))
        self.assertEqual(response.header(b"content-length"), b"18")

    def test_a_response_without_a_content_type_gets_none(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Content-Type-Options: nosniff\r\n"
            b"Date: Sun, 09 Sep 2001 01:46:40 GMT\r\n\r\nok"))
        response = harness.get()
        self.assertEqual((response.code, response.body), (200, b"ok"))
        self.assertNotIn(b"content-type", response.headers)

    def test_the_backends_date_passes(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
            b"Date: Sun, 09 Sep 2001 01:46:40 GMT\r\n\r\nok"))
        response = harness.get()
        self.assertEqual(response.headers[b"date"], [b"Sun, 09 Sep 2001 01:46:40 GMT"])

    def test_a_response_without_a_date_gets_the_proxys(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 204 No Content\r\n\r\n"))
        response = harness.get()
        self.assertEqual(response.code, 204)
        self.assertEqual(response.headers[b"date"], [http_date(harness.clock.seconds())])

    def test_request_body_reaches_the_backend(self):
        harness = ProxyHarness(replicas=1)
        harness.send(b"POST /upload HTTP/1.1\r\nHost: alpha.example.com\r\n"
                     b"Content-Length: 11\r\n\r\nhello world")
        self.assertEqual(harness.backend.requests[0].body, b"hello world")

    def test_chunked_request_body_reaches_the_backend(self):
        harness = ProxyHarness(replicas=1)
        harness.send(b"POST /upload HTTP/1.1\r\nHost: alpha.example.com\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        self.assertEqual(harness.backend.requests[0].body, b"hello world")

    def test_proxied_request_is_activity(self):
        harness = ProxyHarness(replicas=1)
        harness.clock.advance(100)
        harness.get()
        self.assertEqual(harness.agent.last_activity, harness.clock.seconds())

    def test_refused_backend_is_502_naming_the_agent(self):
        harness = ProxyHarness(replicas=1, serving=False)
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.network.refuse(ConnectionRefusedError())
        response = Response(transport.value())
        self.assertEqual(response.code, 502)
        body = response.json()
        self.assertEqual(body["agent"], "alpha")
        self.assertIn("agent alpha is unreachable: connection refused", body["error"])

    def test_backend_not_accepting_in_time_is_504(self):
        harness = ProxyHarness(replicas=1, serving=False)
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.network.refuse(TimeoutError())
        response = Response(transport.value())
        self.assertEqual(response.code, 504)
        self.assertEqual(response.json()["error"],
                         "agent alpha did not accept a connection in time")

    def test_backend_breaking_http_is_502_saying_so(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"))
        response = harness.get()
        self.assertEqual(response.code, 502)
        self.assertEqual(response.json()["error"], "agent alpha sent an invalid HTTP response: "
                                                    "an invalid Content-Length in the response")

    def test_a_bare_cr_in_the_backends_status_line_is_502(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\rSet-Cookie: x=1\r\nContent-Length: 2\r\n\r\nok"))
        response = harness.get()
        self.assertEqual(response.code, 502)
        self.assertNotIn(b"set-cookie", response.headers)

    def test_a_nul_in_a_backends_header_value_is_502(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"))
        self.assertEqual(harness.get().code, 502)

    def test_an_invalid_content_length_on_a_head_answer_is_502(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"))
        _, transport = harness.send(b"HEAD / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        response = Response(transport.value())
        self.assertEqual(response.code, 502)
        self.assertNotEqual(response.header(b"content-length"), b"abc")

    def test_backend_breaking_http_mid_body_cuts_the_client(self):
        harness = ProxyHarness(replicas=1, backend=RawBackend(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n"))
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_slow_backend_is_504_after_the_response_timeout(self):
        harness = ProxyHarness(replicas=1, config=ProxyConfig(response_timeout=60))
        harness.backend.hold = True
        protocol, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.clock.advance(59)
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(1)
        response = Response(transport.value())
        self.assertEqual(response.code, 504)
        self.assertIn("did not answer within 60s", response.json()["error"])
        harness.flush()
        (held,) = harness.backend.held
        self.assertTrue(held.channel is None or held.channel.transport.disconnected)

    def test_client_disconnect_cancels_the_backend_request(self):
        harness = ProxyHarness(replicas=1)
        harness.backend.hold = True
        protocol, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        (held,) = harness.backend.held
        gone = []
        held.notifyFinish().addErrback(gone.append)
        self.assertEqual(harness.agent.in_flight, 1)
        protocol.connectionLost(ConnectionRefusedError())
        harness.flush()
        self.assertEqual(len(gone), 1)  # the backend saw its connection close
        self.assertEqual(harness.agent.in_flight, 0)
        self.assertEqual(self.flushLoggedErrors(), [])
