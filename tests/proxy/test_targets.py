"""
Request targets and Host at the front door (RFC 9112 section 3.2): which forms route,
what the backend then sees as its Host, and what gets 400 instead of a traceback.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.proxy.harness import ProxyHarness, Response


def answer(harness, request_line: bytes, host: bytes = b"alpha.example.com"):
    _, transport = harness.send(request_line + b"\r\nHost: " + host + b"\r\n\r\n")
    return Response(transport.value())


class AbsoluteFormTests(SynchronousTestCase):
    """
    An absolute-form target's authority wins over the Host header, for routing and for
    what the backend is told, and is held to the rules of Host.
    """

    def test_the_targets_authority_routes(self):
        harness = ProxyHarness(replicas=1)
        response = answer(harness, b"GET http://alpha.example.com/x?y=1 HTTP/1.1",
                          host=b"nobody.example.com")
        self.assertEqual(response.code, 200)
        self.assertEqual(harness.backend.requests[0].uri, b"/x?y=1")

    def test_the_backend_sees_the_targets_authority_as_host(self):
        harness = ProxyHarness(replicas=1)
        answer(harness, b"GET http://alpha.example.com/ HTTP/1.1", host=b"attacker.example")
        headers = harness.backend.requests[0].headers
        self.assertEqual(headers.getRawHeaders(b"host"), [b"alpha.example.com"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"alpha.example.com"])

    def test_an_empty_path_is_the_root(self):
        harness = ProxyHarness(replicas=1)
        answer(harness, b"GET http://alpha.example.com HTTP/1.1")
        self.assertEqual(harness.backend.requests[0].uri, b"/")

    def test_a_query_without_a_path_gets_the_root_path(self):
        harness = ProxyHarness(replicas=1)
        answer(harness, b"GET http://alpha.example.com?q=1 HTTP/1.1")
        self.assertEqual(harness.backend.requests[0].uri, b"/?q=1")

    def test_the_scheme_is_case_insensitive(self):
        harness = ProxyHarness(replicas=1)
        self.assertEqual(answer(harness, b"GET HTTPS://alpha.example.com/ HTTP/1.1").code, 200)

    def test_userinfo_is_400(self):
        harness = ProxyHarness(replicas=1)
        response = answer(harness, b"GET http://alpha.example.com:@evil.example/ HTTP/1.1")
        self.assertEqual(response.code, 400)
        self.assertEqual(harness.backend.requests, [])

    def test_another_scheme_is_400(self):
        response = answer(ProxyHarness(replicas=1), b"GET gopher://alpha.example.com/ HTTP/1.1")
        self.assertEqual(response.code, 400)

    def test_a_broken_ipv6_authority_is_400_not_500(self):
        response = answer(ProxyHarness(replicas=1), b"GET http://[::1/ HTTP/1.1")
        self.assertEqual(response.code, 400)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_an_invalid_ipv6_literal_is_400(self):
        response = answer(ProxyHarness(replicas=1), b"GET http://[1:2:3:zz]/ HTTP/1.1")
        self.assertEqual(response.code, 400)

    def test_a_non_ascii_authority_is_400_not_500(self):
        response = answer(ProxyHarness(replicas=1), b"GET http://alpha.ex\xa4mple.com/ HTTP/1.1")
        self.assertEqual(response.code, 400)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_an_empty_authority_is_400(self):
        self.assertEqual(answer(ProxyHarness(replicas=1), b"GET http:///x HTTP/1.1").code, 400)

    def test_a_port_beyond_65535_in_the_target_is_400(self):
        response = answer(ProxyHarness(replicas=1), b"GET http://alpha.example.com:99999/ HTTP/1.1")
        self.assertEqual(response.code, 400)

    def test_a_fragment_is_400(self):
        response = answer(ProxyHarness(replicas=1), b"GET http://alpha.example.com/#x HTTP/1.1")
        self.assertEqual(response.code, 400)

    def test_a_host_header_is_still_required(self):
        harness = ProxyHarness(replicas=1)
        _, transport = harness.send(b"GET http://alpha.example.com/ HTTP/1.1\r\n\r\n")
        self.assertEqual(Response(transport.value()).json(), {"error": "missing Host header"})


class TargetBytesTests(SynchronousTestCase):
    """
    A request target is visible ASCII (RFC 9112 section 3.2, RFC 3986): DEL and bytes
    from 0x80 up get 400, which Twisted lets through up to 0xB0.
    """

    def test_del_is_400(self):
        self.assertEqual(answer(ProxyHarness(replicas=1), b"GET /a\x7fb HTTP/1.1").code, 400)

    def test_high_bytes_are_400(self):
        for byte in (0x80, 0xA0, 0xB0, 0xC3, 0xFF):
            with self.subTest(byte=byte):
                harness = ProxyHarness(replicas=1)
                self.assertEqual(answer(harness, b"GET /a%cb HTTP/1.1" % byte).code, 400)
                self.assertEqual(harness.backend.requests, [])

    def test_a_fragment_in_an_origin_form_target_is_400(self):
        self.assertEqual(answer(ProxyHarness(replicas=1), b"GET /a#b HTTP/1.1").code, 400)

    def test_percent_encoded_bytes_pass(self):
        harness = ProxyHarness(replicas=1)
        self.assertEqual(answer(harness, b"GET /a%C3%A4?x=%FF HTTP/1.1").code, 200)
        self.assertEqual(harness.backend.requests[0].uri, b"/a%C3%A4?x=%FF")

    def test_an_asterisk_target_is_400(self):
        self.assertEqual(answer(ProxyHarness(replicas=1), b"OPTIONS * HTTP/1.1").code, 400)


class HostPortTests(SynchronousTestCase):
    def test_a_port_beyond_65535_is_400(self):
        response = answer(ProxyHarness(replicas=1), b"GET / HTTP/1.1", host=b"alpha.example.com:99999")
        self.assertEqual((response.code, response.json()), (400, {"error": "invalid Host header"}))

    def test_port_65535_routes(self):
        response = answer(ProxyHarness(replicas=1), b"GET / HTTP/1.1", host=b"alpha.example.com:65535")
        self.assertEqual(response.code, 200)
