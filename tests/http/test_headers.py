"""
Header rules: token lists, hop-by-hop removal, X-Forwarded-*, Host validation, the
client's address, Date values.
"""

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from orchestrator.http.headers import (
    client_address,
    forwarded_request_headers,
    header_tokens,
    http_date,
    is_trusted,
    is_valid_host,
    strip_hop_by_hop,
)

tokens = st.from_regex(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True)


def forwarded(headers, trusted=False, client="203.0.113.9", secure=False):
    return forwarded_request_headers(
        Headers(headers), client_address=client, secure=secure, host=b"a.example.com",
        trusted=trusted)


class HeaderTokenTests(SynchronousTestCase):
    def test_comma_separated_tokens_in_any_case(self):
        self.assertEqual(header_tokens([b"keep-alive, Upgrade"]), {b"keep-alive", b"upgrade"})

    def test_tokens_across_repeated_headers(self):
        self.assertEqual(header_tokens([b"keep-alive", b"UPGRADE"]), {b"keep-alive", b"upgrade"})

    def test_no_header_no_tokens(self):
        self.assertEqual(header_tokens(None), frozenset())

    @given(st.lists(tokens, min_size=1, max_size=6), st.sampled_from([b",", b", ", b" ,  "]))
    def test_any_spacing_yields_the_same_tokens(self, values, separator):
        self.assertEqual(header_tokens([separator.join(values)]),
                         {value.lower() for value in values})


class HopByHopTests(SynchronousTestCase):
    def test_hop_by_hop_headers_are_dropped(self):
        headers = strip_hop_by_hop(Headers({
            b"Connection": [b"keep-alive"], b"Keep-Alive": [b"5"], b"TE": [b"trailers"],
            b"Trailer": [b"x"], b"Transfer-Encoding": [b"chunked"], b"Upgrade": [b"h2c"],
            b"Proxy-Connection": [b"x"], b"Proxy-Authorization": [b"Basic x"],
            b"Content-Length": [b"3"], b"Accept": [b"*/*"],
        }))
        self.assertEqual([name for name, _ in headers.getAllRawHeaders()], [b"Accept"])

    def test_headers_named_by_connection_are_dropped(self):
        headers = strip_hop_by_hop(Headers({
            b"Connection": [b"close, X-Secret"], b"X-Secret": [b"1"], b"X-Kept": [b"2"]}))
        self.assertFalse(headers.hasHeader(b"x-secret"))
        self.assertEqual(headers.getRawHeaders(b"x-kept"), [b"2"])

    def test_repeated_headers_keep_every_value(self):
        headers = strip_hop_by_hop(Headers({b"Set-Cookie": [b"a=1", b"b=2"]}))
        self.assertEqual(headers.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2"])


class ForwardedTests(SynchronousTestCase):
    def test_untrusted_client_cannot_spoof_forwarded_for(self):
        headers = forwarded({b"X-Forwarded-For": [b"1.2.3.4"]})
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"203.0.113.9"])

    def test_trusted_proxy_chain_is_appended_to(self):
        headers = forwarded({b"X-Forwarded-For": [b"1.2.3.4"]}, trusted=True)
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"1.2.3.4, 203.0.113.9"])

    def test_proto_and_host_are_set(self):
        headers = forwarded({b"X-Forwarded-Proto": [b"https"]}, secure=False)
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"a.example.com"])

    def test_trusted_proxy_keeps_its_proto(self):
        headers = forwarded({b"X-Forwarded-Proto": [b"https"]}, trusted=True)
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"https"])

    def test_the_host_is_the_one_routed_by(self):
        headers = forwarded({b"Host": [b"attacker.example"]})
        self.assertEqual(headers.getRawHeaders(b"host"), [b"a.example.com"])

    def test_connection_cannot_strip_host(self):
        headers = forwarded({b"Host": [b"a.example.com"], b"Connection": [b"Host, X-A"],
                             b"X-A": [b"1"]})
        self.assertEqual(headers.getRawHeaders(b"host"), [b"a.example.com"])
        self.assertFalse(headers.hasHeader(b"x-a"))

    def test_connection_cannot_strip_host_from_a_response(self):
        headers = strip_hop_by_hop(Headers({b"Host": [b"a"], b"Connection": [b"host"]}))
        self.assertEqual(headers.getRawHeaders(b"host"), [b"a"])

    def test_an_untrusted_client_cannot_send_what_backends_trust(self):
        spoofable = [b"Forwarded", b"X-Real-IP", b"X-Original-URL", b"X-Rewrite-URL",
                     b"X-Forwarded-Port", b"X-Forwarded-Prefix", b"X-Forwarded-Ssl",
                     b"X-Forwarded-Scheme", b"X-Forwarded-Server", b"True-Client-IP",
                     b"X-Client-IP", b"X-Cluster-Client-IP", b"Client-IP",
                     b"CF-Connecting-IP", b"Front-End-Https", b"X-Url-Scheme",
                     b"X-Original-Host", b"X-Host"]
        headers = forwarded({name: [b"1.2.3.4"] for name in spoofable})
        for name in spoofable:
            self.assertFalse(headers.hasHeader(name), name)

    def test_names_with_underscores_are_dropped_from_anyone(self):
        # CGI and WSGI read X_Forwarded_For as X-Forwarded-For.
        for trusted in (False, True):
            headers = forwarded({b"X_Forwarded_For": [b"1.2.3.4"], b"X_Real_IP": [b"1"],
                                 b"Accept": [b"*/*"]}, trusted=trusted)
            names = {name.lower() for name, _ in headers.getAllRawHeaders()}
            self.assertNotIn(b"x_forwarded_for", names)
            self.assertNotIn(b"x_real_ip", names)
            self.assertIn(b"accept", names)

    def test_a_trusted_proxys_own_forwarding_headers_pass(self):
        headers = forwarded({b"X-Real-IP": [b"198.51.100.7"],
                             b"Forwarded": [b"for=198.51.100.7;proto=https"]}, trusted=True)
        self.assertEqual(headers.getRawHeaders(b"x-real-ip"), [b"198.51.100.7"])
        self.assertEqual(headers.getRawHeaders(b"forwarded"), [b"for=198.51.100.7;proto=https"])

    def test_forwarded_host_is_the_routed_host_even_behind_a_trusted_proxy(self):
        headers = forwarded({b"X-Forwarded-Host": [b"attacker.example"]}, trusted=True)
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"a.example.com"])

    def test_original_url_never_passes_even_from_a_trusted_proxy(self):
        headers = forwarded({b"X-Original-URL": [b"/admin"], b"X-Rewrite-URL": [b"/admin"]},
                            trusted=True)
        self.assertFalse(headers.hasHeader(b"x-original-url"))
        self.assertFalse(headers.hasHeader(b"x-rewrite-url"))

    def test_a_trusted_proxys_proto_must_be_http_or_https(self):
        headers = forwarded({b"X-Forwarded-Proto": [b"javascript"]}, trusted=True)
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])

    def test_a_trusted_proxys_last_proto_counts(self):
        headers = forwarded({b"X-Forwarded-Proto": [b"http, HTTPS"]}, trusted=True)
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"https"])

    def test_trust_is_by_network(self):
        networks = (ipaddress.ip_network("10.0.0.0/8"),)
        self.assertTrue(is_trusted("10.1.2.3", networks))
        self.assertFalse(is_trusted("11.1.2.3", networks))
        self.assertFalse(is_trusted("not-an-ip", networks))


class HostValidationTests(SynchronousTestCase):
    def test_valid_hosts(self):
        for host in [b"example.com", b"a.example.com:8080", b"localhost", b"127.0.0.1:80",
                     b"[::1]:8080", b"[2001:db8::1]", b"example.com."]:
            self.assertTrue(is_valid_host(host), host)

    def test_invalid_hosts(self):
        for host in [b"", b"exa mple.com", b"a/b", b"a@b", b"[::1", b"[zz::1]", b"a:b:c",
                     b"-bad.com", b"a.com:99999999", b"a" * 300]:
            self.assertFalse(is_valid_host(host), host)

    @given(st.binary(max_size=40))
    def test_arbitrary_bytes_never_crash(self, value):
        self.assertIn(is_valid_host(value), (True, False))


class HttpDateTests(SynchronousTestCase):
    def test_date_is_the_imf_fixdate_of_the_second(self):
        self.assertEqual(http_date(1_000_000_000.9), b"Sun, 09 Sep 2001 01:46:40 GMT")

    def test_the_next_second_is_formatted_anew(self):
        http_date(1_000_000_000)
        self.assertEqual(http_date(1_000_000_001), b"Sun, 09 Sep 2001 01:46:41 GMT")


class ClientAddressTests(SynchronousTestCase):
    def request_from(self, address):
        request = DummyRequest([])
        request.client = address
        return request

    def test_an_untrusted_client_is_its_address(self):
        request = self.request_from(IPv4Address("TCP", "203.0.113.9", 40000))
        self.assertEqual(client_address(request, ()), ("203.0.113.9", False))

    def test_a_client_in_a_trusted_network_is_trusted(self):
        request = self.request_from(IPv4Address("TCP", "10.0.0.7", 40000))
        networks = (ipaddress.ip_network("10.0.0.0/8"),)
        self.assertEqual(client_address(request, networks), ("10.0.0.7", True))

    def test_a_client_without_an_ip_is_unknown_and_never_trusted(self):
        request = self.request_from(UNIXAddress(None))
        networks = (ipaddress.ip_network("0.0.0.0/0"),)
        self.assertEqual(client_address(request, networks), ("unknown", False))
