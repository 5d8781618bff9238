"""
The relay's pure parts (orchestrator.relay.handshake): recognising an upgrade, origins,
the handshake the agent gets, the headers of its answer passed back.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from orchestrator.relay.handshake import (
    BackendHandshake,
    backend_handshake,
    close_frame_problem,
    handshake_answer_headers,
    incomplete_code_point,
    is_websocket_upgrade,
    offered_subprotocols,
    origin_allowed,
)
from tests.relay.harness import (
    CLIENT_KEY,
)

# Deciding. ----------------------------------------------------------------------------


tokens = st.from_regex(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True)
spacing = st.sampled_from([b",", b", ", b" ,  ", b",\t"])


def any_case(word: bytes):
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: bytes(
            c - 32 if up and 97 <= c <= 122 else c for c, up in zip(word, upper, strict=True)))


class UpgradeDetectionTests(SynchronousTestCase):
    def test_connection_keep_alive_upgrade_is_an_upgrade(self):
        headers = Headers({b"Connection": [b"keep-alive, Upgrade"], b"Upgrade": [b"websocket"]})
        self.assertTrue(is_websocket_upgrade(b"GET", headers))

    @given(st.lists(tokens, max_size=3), st.lists(tokens, max_size=3), any_case(b"upgrade"),
           any_case(b"websocket"), spacing, st.booleans())
    def test_upgrade_token_anywhere_in_any_case_and_spacing(self, before, after, upgrade,
                                                            websocket, separator, split):
        tokens = [*before, upgrade, *after]
        connection = [separator.join(tokens)] if not split else tokens
        headers = Headers({b"Connection": connection, b"Upgrade": [websocket]})
        self.assertTrue(is_websocket_upgrade(b"GET", headers))

    @given(st.lists(tokens.filter(lambda t: t.lower() != b"upgrade"), max_size=4), spacing)
    def test_no_upgrade_token_no_upgrade(self, connection, separator):
        headers = Headers({b"Connection": [separator.join(connection)],
                           b"Upgrade": [b"websocket"]})
        self.assertFalse(is_websocket_upgrade(b"GET", headers))

    def test_upgrade_to_another_protocol_is_not_a_websocket(self):
        headers = Headers({b"Connection": [b"Upgrade"], b"Upgrade": [b"h2c"]})
        self.assertFalse(is_websocket_upgrade(b"GET", headers))

    def test_only_get_upgrades(self):
        headers = Headers({b"Connection": [b"Upgrade"], b"Upgrade": [b"websocket"]})
        self.assertFalse(is_websocket_upgrade(b"POST", headers))

    def test_subprotocols_keep_their_order_and_case(self):
        headers = Headers({b"Sec-WebSocket-Protocol": [b"Chat.v2, json", b"MQTT"]})
        self.assertEqual(offered_subprotocols(headers), ("Chat.v2", "json", "MQTT"))


class OriginTests(SynchronousTestCase):
    allowed = ("https://app.example.com", "https://*.tools.example.com", "http://localhost:3000")

    def test_no_list_allows_any_origin(self):
        self.assertTrue(origin_allowed([b"https://evil.example"], ()))

    def test_listed_origin_is_allowed_in_any_case(self):
        self.assertTrue(origin_allowed([b"HTTPS://App.Example.com"], self.allowed))

    def test_default_port_is_the_same_origin(self):
        self.assertTrue(origin_allowed([b"https://app.example.com:443"], self.allowed))

    def test_other_port_is_another_origin(self):
        self.assertFalse(origin_allowed([b"http://localhost:3001"], self.allowed))

    def test_other_scheme_is_another_origin(self):
        self.assertFalse(origin_allowed([b"http://app.example.com"], self.allowed))

    def test_wildcard_matches_subdomains_only(self):
        self.assertTrue(origin_allowed([b"https://a.b.tools.example.com"], self.allowed))
        self.assertFalse(origin_allowed([b"https://tools.example.com"], self.allowed))
        self.assertFalse(origin_allowed([b"https://eviltools.example.com"], self.allowed))

    def test_missing_origin_is_allowed(self):
        self.assertTrue(origin_allowed(None, self.allowed))

    def test_two_origins_are_refused(self):
        self.assertFalse(origin_allowed([b"https://app.example.com"] * 2, self.allowed))

    def test_garbage_origin_is_refused(self):
        self.assertFalse(origin_allowed([b"not an origin"], self.allowed))

    def test_null_origin_only_when_listed(self):
        self.assertFalse(origin_allowed([b"null"], self.allowed))
        self.assertTrue(origin_allowed([b"null"], ("null",)))


class BackendHandshakeTests(SynchronousTestCase):
    def handshake(self, headers: dict, trusted: bool = False) -> BackendHandshake:
        return backend_handshake(b"/ws/chat?room=1&x=%20", Headers(headers),
                                 client_address="203.0.113.9", secure=True,
                                 host=b"alpha.example.com", trusted=trusted)

    def test_path_query_and_host_pass_unchanged(self):
        handshake = self.handshake({b"Host": [b"alpha.example.com"]})
        self.assertEqual((handshake.resource, handshake.host),
                         ("/ws/chat?room=1&x=%20", "alpha.example.com"))

    def test_credentials_origin_and_user_agent_pass(self):
        handshake = self.handshake({
            b"Cookie": [b"a=1", b"b=2"], b"Authorization": [b"Bearer t0ken"],
            b"Origin": [b"https://app.example.com"], b"User-Agent": [b"Mozilla/5.0"]})
        headers = dict(handshake.headers)
        self.assertEqual(headers["Cookie"], "a=1; b=2")
        self.assertEqual(headers["Authorization"], "Bearer t0ken")
        self.assertEqual((handshake.origin, handshake.user_agent),
                         ("https://app.example.com", "Mozilla/5.0"))

    def test_offered_subprotocols_pass_in_order(self):
        handshake = self.handshake({b"Sec-WebSocket-Protocol": [b"graphql-ws, json"]})
        self.assertEqual(handshake.protocols, ("graphql-ws", "json"))

    def test_forwarded_headers_are_ours_for_an_untrusted_client(self):
        handshake = self.handshake({b"X-Forwarded-For": [b"6.6.6.6"]})
        headers = dict(handshake.headers)
        self.assertEqual((headers["X-Forwarded-For"], headers["X-Forwarded-Proto"],
                          headers["X-Forwarded-Host"]),
                         ("203.0.113.9", "https", "alpha.example.com"))

    def test_forwarded_chain_is_kept_for_a_trusted_proxy(self):
        handshake = self.handshake({b"X-Forwarded-For": [b"198.51.100.1"]}, trusted=True)
        self.assertEqual(dict(handshake.headers)["X-Forwarded-For"], "198.51.100.1, 203.0.113.9")

    def test_the_clients_handshake_and_hop_headers_stay_behind(self):
        handshake = self.handshake({
            b"Connection": [b"Upgrade, X-Secret"], b"Upgrade": [b"websocket"],
            b"X-Secret": [b"1"], b"Sec-WebSocket-Key": [CLIENT_KEY],
            b"Sec-WebSocket-Version": [b"13"], b"Sec-WebSocket-Extensions": [b"permessage-deflate"],
            b"Host": [b"alpha.example.com"], b"Accept-Language": [b"de"]})
        names = {name.lower() for name, _ in handshake.headers}
        self.assertEqual(names, {"accept-language", "x-forwarded-for", "x-forwarded-proto",
                                 "x-forwarded-host"})

    def test_header_that_is_not_utf8_is_left_out(self):
        handshake = self.handshake({b"X-Name": [b"caf\xe9"]})
        self.assertNotIn("X-Name", dict(handshake.headers))


class AnswerHeadersTests(SynchronousTestCase):
    def test_agent_header_that_is_not_ascii_is_left_out(self):
        head = (b"HTTP/1.1 101 Switching Protocols\r\nX-Name: caf\xc3\xa9\r\n"
                b"X-Plain: yes\r\nbroken line\r\n")
        self.assertEqual(handshake_answer_headers(head), {"X-Plain": ["yes"]})


    def test_agent_header_with_a_control_character_is_left_out(self):
        head = (b"HTTP/1.1 101 Switching Protocols\r\nX-A: a\rSet-Cookie: x=1\r\n"
                b"X-B: b\x00\r\nX-C: c\x7f\r\nX-Tab: a\tb\r\n")
        self.assertEqual(handshake_answer_headers(head), {"X-Tab": ["a\tb"]})

    def test_agent_header_with_a_name_that_is_no_token_is_left_out(self):
        head = b"HTTP/1.1 101 Switching Protocols\r\nX A: 1\r\nX(B): 2\r\nX-C: 3\r\n"
        self.assertEqual(handshake_answer_headers(head), {"X-C": ["3"]})


class FrameRuleTests(SynchronousTestCase):
    @given(st.text(max_size=20), st.data())
    def test_the_incomplete_end_of_any_utf8_prefix_is_found(self, text, data):
        encoded = text.encode("utf-8")
        cut = data.draw(st.integers(0, len(encoded)))
        prefix = encoded[:cut]
        tail = incomplete_code_point(prefix)
        self.assertLessEqual(tail, 3)
        prefix[:len(prefix) - tail].decode("utf-8")  # whole code points only
        ends_on_a_code_point = True
        try:
            prefix.decode("utf-8")
        except UnicodeDecodeError:
            ends_on_a_code_point = False
        self.assertEqual(tail == 0, ends_on_a_code_point)

    def test_close_codes(self):
        for code in (1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999):
            self.assertIsNone(close_frame_problem(code, b"ok"), code)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535):
            self.assertIsNotNone(close_frame_problem(code, None), code)

    def test_a_close_reason_must_be_utf8(self):
        self.assertIsNone(close_frame_problem(1000, "tschüß".encode()))
        self.assertIsNotNone(close_frame_problem(1000, b"\xff"))
        self.assertIsNotNone(close_frame_problem(1000, b"\xed\xa0\x80"))  # a surrogate
