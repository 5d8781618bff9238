"""
The proxy listener in memory, for tests: clients on in-memory transports, and the agent's
backend (a recording twisted.web resource, or any server) reached through the proxy's own
backend client and endpoints over Twisted's MemoryReactor, an IOPump per connection.
"""

import json

import attrs
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from orchestrator.config.model import ProxyConfig
from orchestrator.meters import NO_METER
from orchestrator.proxy.frontdoor import FrontDoorSite
from orchestrator.proxy.root import ProxyResource
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import MemoryNetwork, connect_client, make_agent, routes_to


class Backend(Resource):
    """
    A backend that records what it received and answers 200 (or holds the answer).
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []
        self.hold = False
        self.held = []

    def render(self, request):
        self.requests.append(attrs.make_class("Seen", ["method", "uri", "headers", "body"])(
            request.method, request.uri, request.requestHeaders, request.content.read()))
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.responseHeaders.setRawHeaders(b"Set-Cookie", [b"a=1", b"b=2"])
        request.responseHeaders.setRawHeaders(b"Keep-Alive", [b"timeout=5"])
        return b"hello from backend"


class RawBackend(Factory):
    """
    A backend that answers every connection with C{answer}, as bytes, whatever it was
    asked: for backends that break HTTP or leave headers out.
    """

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def buildProtocol(self, addr):
        protocol = _Answering()
        protocol.answer = self.answer
        return protocol


class _Answering(Protocol):
    answer = b""

    def dataReceived(self, data):
        if self.answer:
            answer, self.answer = self.answer, b""
            self.transport.write(answer)


class Response:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.code = int(lines[0].split(b" ")[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())

    def header(self, name: bytes):
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self):
        body = self.body
        if self.header(b"transfer-encoding") == b"chunked":
            size, _, rest = body.partition(b"\r\n")
            body = rest[: int(size, 16)]
        return json.loads(body)


class ProxyHarness:
    """
    One agent behind the proxy listener. The backend takes every connection the proxy
    opens (C{serving}) and answers as L{Backend} does, or as C{backend} (a server
    factory) does; with C{serving=False} connection attempts wait for the test.
    """

    def __init__(self, replicas=0, config=None, backend=None, serving=True, meter=NO_METER,
                 **agent_config):
        config = config or ProxyConfig()
        self.fixture = make_agent(replicas=replicas, **agent_config)
        self.agent = self.fixture.agent
        self.clock = self.fixture.clock
        self.backend = Backend()
        self.server = backend if backend is not None else Site(self.backend, timeout=None)
        self.serving = serving
        self.network = MemoryNetwork(self.clock)
        self.pumps = []
        self.routes = routes_to(self.agent)
        self.resource = ProxyResource(self.routes, config, clock=self.clock, meter=meter)
        self.site = FrontDoorSite(self.resource, config, reactor=self.clock)

    def flush(self):
        """
        Let the backend take the connections the proxy opened, and move bytes both ways
        on all of them until nothing moves.
        """
        moved = True
        while moved:
            moved = False
            while self.serving and self.network.pending():
                self.pumps.append(self.network.serve(self.server))
                moved = True
            for pump in self.pumps:
                moved = pump.flush() or moved

    def connect(self):
        return connect_client(self.site)

    def send(self, raw: bytes):
        protocol, transport = self.connect()
        protocol.dataReceived(raw)
        self.flush()
        return protocol, transport

    def get(self, path=b"/", host=b"alpha.example.com", extra=b""):
        _, transport = self.send(b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n")
        return Response(transport.value())

    def wake(self):
        self.agent.admit(ignored=False)
        self.clock.advance(0.05)
        assert self.agent.state is AgentState.READY


def cold_harness(**config) -> ProxyHarness:
    """
    A sleeping agent whose wake waits for the test (C{swarm.run_tasks}).
    """
    return ProxyHarness(swarm=FakeSwarm(auto_run=False), **config)
