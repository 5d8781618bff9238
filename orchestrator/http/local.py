"""
The private listeners' APIs (the admin API, the agents' API, metrics) behind the proxy's
hardened front door, which asks each resource where a request body goes as it arrives:
theirs are small, kept whole, and refused beyond a bound.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from twisted.web.resource import Resource

from orchestrator.http.answers import error_answer
from orchestrator.http.bodies import KeptBody


class KeptBodies(Resource):
    """
    A resource served through the front door (which asks each resource where a body
    goes as it arrives) that wants its small bodies whole: kept up to C{limit} bytes,
    413 beyond, then handed to C{inner} as C{request.content}.
    """

    isLeaf = True

    def __init__(self, inner, *, limit: int, clock) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._clock = clock

    def prepare(self, request, length=0) -> KeptBody:
        return KeptBody(self._limit)

    def render(self, request):
        if request.postpath is None:
            # The front door skips twisted.web's resource traversal (the proxy has one
            # resource); a routed app (Klein) reads the path from these.
            request.prepath = []
            request.postpath = [unquote_to_bytes(part) for part in request.path[1:].split(b"/")]
        content = request.content
        if isinstance(content, KeptBody):
            if content.overflowed:
                answer = error_answer(413, f"the request body is over {self._limit} bytes")
                return answer.apply(request, self._clock.seconds())
            content.seek(0)
        return self._inner.render(request)
