"""
Every answer the orchestrator makes itself, without a backend: JSON errors and states,
the 503 of an agent that is not ready (with C{Retry-After}), pages and scripts.

One value (L{Answer}) renders two ways with the same headers (Content-Type,
Cache-Control: no-store unless the answer says otherwise, Date, Content-Length): onto a
twisted.web request, or as the raw bytes of a whole response for a connection
twisted.web no longer handles (a request it gave up on, a refused WebSocket handshake).
"""

from __future__ import annotations

import json
from http import HTTPStatus

import attrs
from twisted.web.http import RESPONSES
from zope.interface import implementer

from orchestrator.http.bodies import DiscardedBody
from orchestrator.http.headers import http_date
from orchestrator.interfaces import IRequestHandler

JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
JAVASCRIPT = b"text/javascript; charset=utf-8"
_NO_STORE = b"no-store"


@attrs.frozen
class Answer:
    """
    A response decided without the backend.
    """

    code: int
    body: bytes
    content_type: bytes = JSON
    #: Headers besides the usual ones, in order; a C{Cache-Control} here replaces
    #: C{no-store}.
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def fields(self, now: float) -> list[tuple[bytes, bytes]]:
        """
        The answer's header fields, as of C{now} (for C{Date}).
        """
        fields = [(b"Content-Type", self.content_type)]
        if not any(name.lower() == b"cache-control" for name, _ in self.headers):
            fields.append((b"Cache-Control", _NO_STORE))
        fields += [(b"Date", http_date(now)), (b"Content-Length", b"%d" % len(self.body))]
        fields.extend(self.headers)
        return fields

    def apply(self, request, now: float) -> bytes:
        """
        Set the answer's status and headers on a twisted.web request; return what to
        write: its body, or nothing to a C{HEAD} (which gets the C{Content-Length} a
        C{GET} would, as RFC 9110 section 9.3.2 asks, and twisted.web no warning).
        """
        request.setResponseCode(self.code)
        headers = request.responseHeaders
        for name, value in self.fields(now):
            headers.setRawHeaders(name, [value])
        return b"" if request.method == b"HEAD" else self.body

    def raw(self, now: float) -> bytes:
        """
        The whole response as bytes, closing the connection after it.
        """
        lines = [b"HTTP/1.1 %d %s" % (self.code, _phrase(self.code))]
        lines += [name + b": " + value for name, value in self.fields(now)]
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


def _phrase(code: int) -> bytes:
    phrase = RESPONSES.get(code)
    if phrase is None:
        try:
            phrase = HTTPStatus(code).phrase.encode("ascii")
        except ValueError:
            phrase = b"Error"
    return phrase


def json_answer(code: int, body: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    """
    An answer whose body is C{body} as JSON.
    """
    return Answer(code, json.dumps(body).encode("utf-8"), JSON, headers)


def error_answer(code: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = (),
                 **fields) -> Answer:
    """
    An error: C{{"error": message, **fields}} (an agent's state, say).
    """
    return json_answer(code, {"error": message, **fields}, headers)


def unavailable(state: dict, retry_after: int, page: bytes | None = None,
                message: str | None = None) -> Answer:
    """
    The 503 of an agent that is not ready: C{Retry-After} and its state as JSON (with
    C{message} as its C{error} when there is one), or the HTML C{page} for a browser.
    """
    retry = ((b"Retry-After", b"%d" % retry_after),)
    if page is not None:
        return Answer(503, page, HTML, retry)
    body = state if message is None else {"error": message, **state}
    return json_answer(503, body, retry)


@implementer(IRequestHandler)
class LocalAnswer:
    """
    The handler of a request the proxy answers itself: its body, if it has one, is read
    and dropped (the connection stays usable), then the answer is written.
    """

    def __init__(self, answer: Answer, clock) -> None:
        self.answer = answer
        self._clock = clock
        self.request_body = DiscardedBody()

    def render(self, request) -> bytes:
        return self.answer.apply(request, self._clock.seconds())
