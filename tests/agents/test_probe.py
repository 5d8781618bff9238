"""
The health prober's contract, run against the real HttpProber (over loopback, with the
real reactor) and against the scripted prober of the unit tests, so that the fake says
what the real one says: what passes, what fails, and how each failure reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from orchestrator.agents.probe import HttpProber, IProber, ProbeResult
from orchestrator.config.model import Backend
from tests.helpers import ANSWERS, NOT_HTTP, REFUSES, SILENT, ScriptedProber, inline


class ProberContract(ABC):
    """
    What every L{IProber} does. Subclasses make the backends and the prober.
    """

    timeout = 20

    @abstractmethod
    async def backend(self, behaviour: str, status: int = 200) -> Backend:
        """
        A backend that answers C{status} (ANSWERS), refuses connections (REFUSES), never
        answers (SILENT), or answers in another protocol (NOT_HTTP).
        """

    @abstractmethod
    def prober(self) -> IProber:
        """
        The prober under test.
        """

    async def probe(self, backend: Backend, timeout: float = 5) -> ProbeResult:
        return await self.prober().probe(backend, "/health", timeout)

    def test_it_provides_the_interface(self):
        self.assertTrue(verifyObject(IProber, self.prober()))

    @inline
    async def test_2xx_and_3xx_pass_others_fail(self):
        for status, ok in ((200, True), (204, True), (302, True), (404, False), (500, False)):
            result = await self.probe(await self.backend(ANSWERS, status))
            self.assertEqual(result, ProbeResult(ok, f"HTTP {status}"))

    @inline
    async def test_refused(self):
        self.assertEqual(await self.probe(await self.backend(REFUSES)),
                         ProbeResult(False, "connection refused"))

    @inline
    async def test_a_silent_backend_fails_within_the_timeout(self):
        self.assertEqual(await self.probe(await self.backend(SILENT), timeout=0.5),
                         ProbeResult(False, "no answer within 0.5s"))

    @inline
    async def test_a_backend_that_does_not_speak_http_fails_saying_so(self):
        result = await self.probe(await self.backend(NOT_HTTP))
        self.assertFalse(result.ok)
        self.assertIn("not an HTTP/1.1 status line", result.detail)


class Health(Resource):
    isLeaf = True

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.user_agents = []

    def render_GET(self, request):
        self.user_agents.append(request.getHeader(b"user-agent"))
        request.setResponseCode(self.status)
        return b"body"


class Garbage(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


class Silent(Protocol):
    pass


class HttpProberContractTests(ProberContract, TestCase):
    async def listen(self, factory) -> Backend:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return Backend("http", "127.0.0.1", port.getHost().port)

    async def backend(self, behaviour: str, status: int = 200) -> Backend:
        if behaviour == ANSWERS:
            self.health = Health(status)
            return await self.listen(Site(self.health))
        if behaviour == SILENT:
            return await self.listen(Factory.forProtocol(Silent))
        if behaviour == NOT_HTTP:
            return await self.listen(Factory.forProtocol(Garbage))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        number = port.getHost().port
        await port.stopListening()  # nothing listens there now
        return Backend("http", "127.0.0.1", number)

    def prober(self) -> IProber:
        prober = HttpProber(reactor)
        self.addCleanup(prober.close)
        return prober

    @inline
    async def test_probes_say_who_they_are(self):
        await self.probe(await self.backend(ANSWERS))
        self.assertEqual(self.health.user_agents, [b"orchestrator-health/1"])


class ScriptedProberContractTests(ProberContract, TestCase):
    def setUp(self):
        self.scripted = ScriptedProber()
        self.ports = iter(range(20000, 30000))

    async def backend(self, behaviour: str, status: int = 200) -> Backend:
        backend = Backend("http", "127.0.0.1", next(self.ports))
        self.scripted.script(backend, behaviour, status)
        return backend

    def prober(self) -> IProber:
        return self.scripted
