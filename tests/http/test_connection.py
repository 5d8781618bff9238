"""
One backend connection (orchestrator.http.connection), through the client: request
heads and bodies, response framing, flow control, and backends that break HTTP.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from zope.interface.verify import verifyObject

from orchestrator.http.connection import parse_head
from orchestrator.http.response import BadResponse
from tests.http.backend import URL, Body, ClientFixture, Producer, fresh_get


class ConnectionTests(ClientFixture, SynchronousTestCase):
    # Requests.

    def test_request_head_carries_method_target_headers_and_a_host(self) -> None:
        self.request(headers={b"X-Thing": [b"a", b"b"]})
        sent = self.connection()[1].value()
        self.assertTrue(sent.startswith(b"GET /x?y=1 HTTP/1.1\r\n"))
        self.assertIn(b"Host: 127.0.0.1:8080\r\n", sent)
        self.assertIn(b"X-Thing: a\r\nX-Thing: b\r\n", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n"))

    def test_the_clients_host_is_kept(self) -> None:
        self.request(headers={b"Host": [b"agent.example.com"]})
        sent = self.connection()[1].value()
        self.assertIn(b"Host: agent.example.com\r\n", sent)
        self.assertNotIn(b"127.0.0.1:8080", sent)

    def test_a_bare_authority_asks_for_the_root(self) -> None:
        self.client.request(b"GET", URL, Headers(), None)
        self.assertTrue(self.connection()[1].value().startswith(b"GET / HTTP/1.1\r\n"))

    def test_post_without_body_says_so(self) -> None:
        self.request(method=b"POST")
        self.assertIn(b"Content-Length: 0\r\n", self.connection()[1].value())

    def test_known_length_body_is_written_as_is(self) -> None:
        body = Producer(length=5)
        self.request(method=b"PUT", body=body)
        _, transport = self.connection()
        self.assertIn(b"Content-Length: 5\r\n", transport.value())
        self.assertIs(transport.producer, body)
        body.consumer.write(b"hello")
        body.done.callback(None)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nhello"))
        self.assertIsNone(transport.producer)

    def test_unknown_length_body_is_chunked(self) -> None:
        body = Producer()
        self.request(method=b"POST", body=body)
        _, transport = self.connection()
        self.assertIn(b"Transfer-Encoding: chunked\r\n", transport.value())
        body.consumer.write(b"hello")
        body.consumer.write(b"")
        body.consumer.write(b"x" * 17)
        body.done.callback(None)
        self.assertTrue(transport.value().endswith(
            b"\r\n\r\n5\r\nhello\r\n11\r\n" + b"x" * 17 + b"\r\n0\r\n\r\n"))

    # Responses and their framing.

    def test_content_length_response(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 201 Made\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhel")
        [response] = responses
        self.assertTrue(verifyObject(IResponse, response))
        self.assertEqual((response.version, response.code, response.phrase, response.length),
                         ((1, 1), 201, b"Made", 5))
        self.assertEqual(response.headers.getRawHeaders(b"x-a"), [b"1"])
        body = self.body_of(response)
        self.answer(b"lo")
        self.assertEqual(body.data, b"hello")
        body.reason.trap(ResponseDone)
        self.assertEqual(self.pool.idle_count(), 1)

    def test_status_line_without_a_phrase_and_bare_lf_lines(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200\nContent-Length: 2\n\nok")
        self.assertEqual((responses[0].code, responses[0].phrase), (200, b""))
        self.assertEqual(self.body_of(responses[0]).data, b"ok")

    def test_chunked_response(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
        body = self.body_of(responses[0])
        self.assertEqual(responses[0].length, UNKNOWN_LENGTH)
        self.assertEqual(body.data, b"hello0123456789")
        body.reason.trap(ResponseDone)
        self.assertEqual(self.pool.idle_count(), 1)

    @given(st.lists(st.integers(min_value=1, max_value=120), max_size=12))
    def test_any_split_of_the_bytes_gives_the_same_response(self, cuts) -> None:
        raw = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
               b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n")
        responses, protocol = fresh_get()
        body = Body()
        position = 0
        for cut in sorted(set(cuts)) + [len(raw)]:
            protocol.dataReceived(raw[position:cut])
            position = max(position, cut)
            if responses and body.transport is None:
                responses[0].deliverBody(body)
        self.assertEqual(responses[0].code, 200)
        self.assertEqual(body.data, b"helloabc")
        body.reason.trap(ResponseDone)

    @given(st.lists(st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
                         b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n",
                         b"Connection: close\r\n", b"\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n",
                         b"ffffffffffffffff\r\n", b" folded\r\n", b"\n"]),
    ), max_size=12))
    def test_any_bytes_from_a_backend_end_in_a_response_or_a_failure(self, pieces) -> None:
        # Whatever a backend sends, the client never raises, and the request ends: with
        # a response whose body ends, or with a failure. (A POST: never sent again on a
        # new connection, so this one connection's end is what ends it.)
        outcome, protocol = fresh_get(b"POST")
        body = Body()
        for piece in pieces:
            protocol.dataReceived(piece)
            if outcome and not isinstance(outcome[0], Failure) and body.transport is None:
                outcome[0].deliverBody(body)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(outcome), 1)
        if isinstance(outcome[0], Failure):
            outcome[0].trap(ResponseFailed)
        else:
            if body.transport is None:
                outcome[0].deliverBody(body)
            self.assertIsNotNone(body.reason)

    def test_body_until_close_is_potential_data_loss_and_not_reused(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\n\r\nsome")
        body = self.body_of(responses[0])
        protocol, _ = self.connection()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(body.data, b"some")
        body.reason.trap(PotentialDataLoss)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_connection_close_and_http_1_0_are_not_reused(self) -> None:
        for head in (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                     b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"):
            self.request()
            self.answer(head)
            self.assertTrue(self.connection()[1].disconnecting)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_head_204_and_304_have_no_body(self) -> None:
        for method, status in ((b"HEAD", b"200"), (b"GET", b"204"), (b"GET", b"304")):
            _, responses, _ = self.request(method=method)
            self.answer(b"HTTP/1.1 " + status + b" X\r\nContent-Length: 42\r\n\r\n")
            body = self.body_of(responses[0])
            body.reason.trap(ResponseDone)
            self.assertEqual(body.data, b"")
        # One connection carried all three.
        self.assertEqual(len(self.connections()), 1)

    def test_a_pooled_connection_carries_the_next_request(self) -> None:
        self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        _, responses, _ = self.request()
        self.assertEqual(len(self.connections()), 1)
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(responses[0].code, 204)

    def test_body_before_delivery_is_kept_and_the_backend_paused(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
        _, transport = self.connection()
        self.assertEqual(transport.producerState, "paused")
        body = self.body_of(responses[0])
        self.assertEqual(transport.producerState, "producing")
        self.answer(b"-last")
        self.assertEqual(body.data, b"first-last")
        body.reason.trap(ResponseDone)

    def test_a_whole_body_held_frees_its_connection_for_the_next_request(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
        self.assertEqual(self.pool.idle_count(), 1)
        self.assertEqual(self.connection()[1].producerState, "producing")
        self.request()  # reuses the connection
        body = self.body_of(responses[0])
        self.assertEqual(body.data, b"body")
        body.reason.trap(ResponseDone)
        # A slow client's pause no longer reaches the connection, which is busy elsewhere.
        body.transport.pauseProducing()
        self.assertEqual(self.connection()[1].producerState, "producing")

    def test_the_body_consumer_pauses_and_resumes_the_backend(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        body = self.body_of(responses[0])
        _, transport = self.connection()
        body.transport.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        body.transport.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_stopping_the_body_closes_the_connection(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        body = self.body_of(responses[0])
        body.transport.stopProducing()
        protocol, transport = self.connection()
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        body.reason.trap(ResponseFailed)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_an_answer_before_the_whole_upload_drops_the_rest(self) -> None:
        upload = Producer(length=100)
        _, responses, _ = self.request(method=b"PUT", body=upload)
        self.answer(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(responses[0].code, 413)
        self.assertTrue(upload.stopped)
        _, transport = self.connection()
        self.assertTrue(transport.disconnected)
        self.assertIsNone(transport.producer)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_bytes_after_the_response_end_the_connection(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
        self.assertEqual(self.body_of(responses[0]).data, b"ok")
        self.assertTrue(self.connection()[1].disconnected)
        self.assertEqual(self.pool.idle_count(), 0)

    # Bad responses.

    def assert_bad(self, raw: bytes, message: str) -> None:
        _, _, failures = self.request()
        protocol, transport = self.connection()
        protocol.dataReceived(raw)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        [failure] = failures
        failure.trap(ResponseFailed)
        reason = failure.value.reasons[0]
        reason.trap(BadResponse)
        self.assertIn(message, str(reason.value))

    def test_garbage_status_line(self) -> None:
        self.assert_bad(b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 status line")

    def test_conflicting_content_lengths(self) -> None:
        self.assert_bad(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                        "invalid Content-Length")

    def test_folded_header(self) -> None:
        self.assert_bad(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  more\r\n\r\n", "obsolete line folding")

    def test_header_line_without_a_name(self) -> None:
        self.assert_bad(b"HTTP/1.1 200 OK\r\n: nameless\r\n\r\n", "malformed response header")

    def test_head_too_large(self) -> None:
        self.assert_bad(b"HTTP/1.1 200 OK\r\n" + b"X-A: 1234567890\r\n" * 5000, "too large")

    def test_switching_protocols_unasked(self) -> None:
        self.assert_bad(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101")

    def test_a_bare_cr_in_the_status_line(self) -> None:
        self.assert_bad(b"HTTP/1.1 200 OK\rSet-Cookie: x=1\r\nContent-Length: 0\r\n\r\n",
                        "control character")

    def test_a_bare_cr_in_a_header_value(self) -> None:
        self.assert_bad(b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
                        "control character")

    def test_control_characters_in_a_header_value(self) -> None:
        for byte in (0, 1, 8, 0x0B, 0x1F, 0x7F):
            with self.subTest(byte=byte):
                self.assert_bad(b"HTTP/1.1 200 OK\r\nX-A: a%cb\r\nContent-Length: 0\r\n\r\n"
                                % byte, "control character")

    def test_a_status_code_out_of_range(self) -> None:
        self.assert_bad(b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", "status code")
        self.assert_bad(b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n", "status code")

    def test_a_tab_and_high_bytes_in_a_value_pass(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nX-A: a\tb \xe4\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(responses[0].headers.getRawHeaders(b"x-a"), [b"a\tb \xe4"])

    def test_an_invalid_content_length_on_a_head_answer(self) -> None:
        _, _, failures = self.request(method=b"HEAD")
        protocol, transport = self.connection()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionLost()))
        [failure] = failures
        failure.trap(ResponseFailed)
        failure.value.reasons[0].trap(BadResponse)

    def test_an_invalid_content_length_on_a_304(self) -> None:
        self.assert_bad(b"HTTP/1.1 304 Not Modified\r\nContent-Length: -1\r\n\r\n",
                        "invalid Content-Length")

    def test_bad_chunk_size_cuts_the_body(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        body = self.body_of(responses[0])
        protocol, transport = self.connection()
        protocol.dataReceived(b"0x5\r\n")
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(body.data, b"hello")
        body.reason.trap(ResponseFailed)
        body.reason.value.reasons[0].trap(BadResponse)

    def test_cut_mid_body(self) -> None:
        _, responses, _ = self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        body = self.body_of(responses[0])
        self.connection()[0].connectionLost(Failure(ConnectionDone()))
        body.reason.trap(ResponseFailed)



class ParseHeadTests(SynchronousTestCase):
    """
    The pure head parser (parse_head): whatever it accepts is safe to relay.
    """

    @given(st.lists(st.one_of(
        st.binary(max_size=24),
        st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 404 ", b"HTTP/1.1 200 a\rb",
                         b"X-A: 1", b"X-A: a\x00", b"Content-Length: 7", b"\r", b"\n",
                         b"\r\n", b"Transfer-Encoding: gzip, chunked", b":"]),
    ), min_size=1, max_size=10))
    def test_what_it_accepts_holds_no_control_characters(self, pieces) -> None:
        head = b"".join(pieces)
        try:
            _, code, phrase, headers, lengths, _, _ = parse_head(head)
        except BadResponse:
            return
        self.assertTrue(100 <= code <= 599)
        for text in [phrase, *(v for _, values in headers.getAllRawHeaders() for v in values)]:
            self.assertFalse(any(c < 32 and c != 9 or c == 127 for c in text), text)
        for name, _ in headers.getAllRawHeaders():
            self.assertRegex(name, rb"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
