"""
The metrics as a scraper reads them: prometheus_client's own encoders (the text format,
or OpenMetrics when the scraper asks for it), on the admin listener's C{/metrics} and
on the optional listener of their own (C{listen.metrics}).

Not C{prometheus_client.twisted.MetricsResource}: that one renders in the global
reactor's thread pool through WSGI; rendering here is quick and on the reactor thread,
which is also where the state it reads may be read safely.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource

from orchestrator.http.answers import error_answer


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """
    The scrape's body and its content type, in the format C{accept} prefers.
    """
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


class MetricsResource(Resource):
    """
    The root of the metrics listener: C{GET /metrics}; anything else is 404.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, clock) -> None:
        """
        @param clock: for the error answers' C{Date}.
        """
        super().__init__()
        self._registry = registry
        self._clock = clock

    def render(self, request) -> bytes:
        request.setHeader(b"Cache-Control", b"no-store")
        if request.path != b"/metrics":
            return self._error(request, 404, "metrics are at /metrics")
        if request.method not in (b"GET", b"HEAD"):
            return self._error(request, 405, "use GET to read the metrics")
        accept = request.getHeader(b"accept")
        body, content_type = exposition(self._registry,
                                        accept.decode("latin-1") if accept else None)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return b"" if request.method == b"HEAD" else body

    def _error(self, request, code: int, message: str) -> bytes:
        allow = tuple((b"Allow", b"GET, HEAD") for _ in range(code == 405))
        return error_answer(code, message, allow).apply(request, self._clock.seconds())
