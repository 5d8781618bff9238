"""
Answers the proxy makes itself, without a backend.
"""

from __future__ import annotations

import json

from twisted.web.http import datetimeToString


def json_answer(request, code: int, body: dict, headers: dict[bytes, bytes] | None = None) -> bytes:
    """
    Set up a JSON response on C{request} and return its body.
    """
    request.setResponseCode(code)
    request.setHeader(b"Date", datetimeToString())
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return json.dumps(body).encode("utf-8")


class LocalAnswer:
    """
    A response decided without the backend (an error, a 503, the health body, a page).
    """

    def __init__(self, code: int, body: dict | bytes, headers: dict[bytes, bytes] | None = None,
                 content_type: bytes = b"application/json") -> None:
        self.code = code
        self.body = body
        self.headers = headers
        self.content_type = content_type

    def render(self, request):
        if isinstance(self.body, dict):
            return json_answer(request, self.code, self.body, self.headers)
        request.setResponseCode(self.code)
        request.setHeader(b"Date", datetimeToString())
        request.setHeader(b"Content-Type", self.content_type)
        for name, value in (self.headers or {}).items():
            request.setHeader(name, value)
        return self.body
