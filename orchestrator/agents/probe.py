"""
Health probes: one HTTP GET of an agent's health path through the same backend address
the proxy uses, so "ready" means "the proxy can reach it".
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from zope.interface import Interface, implementer

from orchestrator.config.model import Backend
from orchestrator.http.client import BackendClient, BackendPool
from orchestrator.http.errors import describe_connection_error

USER_AGENT = b"orchestrator-health/1"


@attrs.frozen
class ProbeResult:
    ok: bool
    #: Why it failed ("connection refused", "HTTP 500", ...) or the status when it passed.
    detail: str


class IProber(Interface):
    def probe(backend: Backend, path: str, timeout: float):  # type: ignore[misc]
        """
        GET C{path} on C{backend}; fire with a L{ProbeResult} (never fail).
        """


@implementer(IProber)
class HttpProber:
    """
    Probes through the proxy's own HTTP client, so a probe passes only where the proxy
    can relay; each over a fresh connection, so a dead task is never hidden behind a
    kept-alive one. 2xx and 3xx pass.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._pool = BackendPool(reactor, max_idle=0)

    async def _probe(self, backend: Backend, path: str, timeout: float) -> ProbeResult:
        client = BackendClient(self._reactor, self._pool, connect_timeout=timeout)
        url = (backend.url + path).encode("ascii")
        request = client.request(b"GET", url, Headers({b"User-Agent": [USER_AGENT]}))
        request.addTimeout(timeout, self._reactor)
        try:
            response = await request
            reading = readBody(response)
            reading.addTimeout(timeout, self._reactor)
            await reading
        except (TimeoutError, CancelledError):
            return ProbeResult(False, f"no answer within {timeout:g}s")
        except Exception as error:
            return ProbeResult(False, describe_connection_error(error))
        if 200 <= response.code < 400:
            return ProbeResult(True, f"HTTP {response.code}")
        return ProbeResult(False, f"HTTP {response.code}")

    def probe(self, backend: Backend, path: str, timeout: float):
        return Deferred.fromCoroutine(self._probe(backend, path, timeout))

    def close(self):
        return self._pool.close_idle()
