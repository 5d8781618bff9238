"""
Every local answer, from one module: the same headers on a twisted.web request and as
raw bytes for a connection twisted.web no longer handles.
"""

import json

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from orchestrator.http.answers import (
    HTML,
    Answer,
    error_answer,
    json_answer,
    unavailable,
)
from tests.helpers import connect_client
from tests.proxy.harness import Response

#: 2001-09-09 01:46:40 UTC.
NOW = 1_000_000_000.5


class Answering(Resource):
    isLeaf = True

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer

    def render(self, request):
        return self.answer.apply(request, NOW)


def over_twisted_web(answer: Answer, method: bytes = b"GET") -> bytes:
    """
    What a client receives when a twisted.web resource renders C{answer}.
    """
    channel, transport = connect_client(Site(Answering(answer), reactor=Clock()))
    channel.dataReceived(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    return transport.value()


class AnswerTests(SynchronousTestCase):
    def test_json_answer_has_type_no_store_date_and_length(self):
        response = Response(over_twisted_web(json_answer(200, {"status": "ok"})))
        self.assertEqual((response.code, response.json()), (200, {"status": "ok"}))
        self.assertEqual(response.header(b"content-type"), b"application/json")
        self.assertEqual(response.header(b"cache-control"), b"no-store")
        self.assertEqual(response.header(b"date"), b"Sun, 09 Sep 2001 01:46:40 GMT")
        self.assertEqual(response.header(b"content-length"), b"16")

    def test_raw_answer_has_the_same_headers_and_closes(self):
        answer = error_answer(431, "too big")
        raw = answer.raw(NOW)
        self.assertTrue(raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        response = Response(raw)
        web = Response(over_twisted_web(answer))
        for name in (b"content-type", b"cache-control", b"date", b"content-length"):
            self.assertEqual(response.header(name), web.header(name), name)
        self.assertEqual(response.header(b"connection"), b"close")
        self.assertEqual(response.json(), {"error": "too big"})

    def test_head_gets_the_length_of_a_get_no_body_and_no_warning(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        raw = over_twisted_web(json_answer(200, {"status": "ok"}), method=b"HEAD")
        response = Response(raw)
        self.assertEqual((response.header(b"content-length"), response.body), (b"16", b""))
        self.assertEqual(list(logged), [])

    def test_a_cache_control_given_replaces_no_store(self):
        answer = Answer(200, b"x", b"text/plain", ((b"Cache-Control", b"max-age=300"),))
        response = Response(answer.raw(NOW))
        self.assertEqual(response.headers[b"cache-control"], [b"max-age=300"])

    def test_error_carries_the_extra_fields(self):
        answer = error_answer(502, "agent alpha is unreachable", status="ready", agent="alpha")
        self.assertEqual(json.loads(answer.body), {
            "error": "agent alpha is unreachable", "status": "ready", "agent": "alpha"})

    def test_unavailable_is_a_503_with_retry_after_and_the_state(self):
        answer = unavailable({"status": "starting", "agent": "alpha"}, 3)
        self.assertEqual((answer.code, answer.headers), (503, ((b"Retry-After", b"3"),)))
        self.assertEqual(json.loads(answer.body), {"status": "starting", "agent": "alpha"})

    def test_unavailable_with_a_message_names_it_as_the_error(self):
        answer = unavailable({"status": "sleeping", "agent": "alpha"}, 3, message="asleep")
        self.assertEqual(json.loads(answer.body)["error"], "asleep")

    def test_unavailable_for_a_browser_is_the_page(self):
        answer = unavailable({"status": "starting", "agent": "alpha"}, 3, page=b"<p>wait</p>")
        self.assertEqual((answer.content_type, answer.body), (HTML, b"<p>wait</p>"))
        self.assertEqual(answer.headers, ((b"Retry-After", b"3"),))

    def test_a_code_without_a_known_phrase_still_has_one(self):
        self.assertTrue(Answer(599, b"").raw(NOW).startswith(b"HTTP/1.1 599 Error\r\n"))
