"""
HttpProber over loopback, with the real reactor: what passes, what fails and how the
failure reads.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from orchestrator.agents.probe import HttpProber, ProbeResult
from orchestrator.config.model import Backend
from tests.helpers import inline


class Health(Resource):
    isLeaf = True

    def render_GET(self, request):
        self.user_agent = request.getHeader(b"user-agent")
        request.setResponseCode(int(request.path.rsplit(b"/", 1)[1]))
        return b"body"


class Garbage(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


class ProberTests(TestCase):
    timeout = 20

    async def listen(self, factory) -> Backend:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return Backend("http", "127.0.0.1", port.getHost().port)

    async def probe(self, backend: Backend, path: str = "/status/200") -> ProbeResult:
        prober = HttpProber(reactor)
        self.addCleanup(prober.close)
        return await prober.probe(backend, path, timeout=5)

    @inline
    async def test_2xx_and_3xx_pass_others_fail(self):
        health = Health()
        backend = await self.listen(Site(health))
        for status, ok in ((200, True), (204, True), (302, True), (404, False), (500, False)):
            result = await self.probe(backend, f"/status/{status}")
            self.assertEqual(result, ProbeResult(ok, f"HTTP {status}"))
        self.assertEqual(health.user_agent, b"orchestrator-health/1")

    @inline
    async def test_refused(self):
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        number = port.getHost().port
        await port.stopListening()  # nothing listens there now
        self.assertEqual(await self.probe(Backend("http", "127.0.0.1", number)),
                         ProbeResult(False, "connection refused"))

    @inline
    async def test_a_backend_that_does_not_speak_http_fails_saying_so(self):
        backend = await self.listen(Factory.forProtocol(Garbage))
        result = await self.probe(backend)
        self.assertFalse(result.ok)
        self.assertIn("not an HTTP/1.1 status line", result.detail)
