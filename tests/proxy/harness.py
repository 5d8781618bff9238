"""
The proxy listener in memory, for tests: a recording backend behind treq's in-memory
agent, a parsed raw response, and failing or silent clients.
"""

import json

import attrs
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orchestrator.agents.routes import RouteTable
from orchestrator.config.model import ProxyConfig
from orchestrator.proxy.frontdoor import FrontDoorSite
from orchestrator.proxy.root import ProxyResource
from orchestrator.states import AgentState
from tests.helpers import connect_client, make_agent


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
    def __init__(self, replicas=0, http_client=None, config=None, **agent_config):
        config = config or ProxyConfig()
        self.fixture = make_agent(replicas=replicas, **agent_config)
        self.agent = self.fixture.agent
        self.clock = self.fixture.clock
        self.backend = Backend()
        self.traversal = RequestTraversalAgent(self.backend)
        routes = RouteTable()
        for host in self.agent.config.hosts:
            routes.add(host, self.agent, owner=self.agent.name)
        self.resource = ProxyResource(
            routes, config, clock=self.clock,
            clients=StubClients(http_client or (lambda agent: self.traversal)))
        self.site = FrontDoorSite(self.resource, header_timeout=config.header_timeout,
                                  max_header_bytes=config.max_header_bytes,
                                  idle_timeout=config.idle_connection_timeout, reactor=self.clock)

    def connect(self):
        return connect_client(self.site)

    def send(self, raw: bytes):
        protocol, transport = self.connect()
        protocol.dataReceived(raw)
        self.traversal.flush()
        return protocol, transport

    def get(self, path=b"/", host=b"alpha.example.com", extra=b""):
        _, transport = self.send(b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n")
        return Response(transport.value())

    def wake(self):
        self.agent.admit(ignored=False)
        self.clock.advance(0.05)
        assert self.agent.state is AgentState.READY


class StubClients:
    """
    The backend client of every agent from C{client_of(agent)}.
    """

    endpoints = None

    def __init__(self, client_of):
        self.for_agent = client_of

    def reconfigure(self, connect_timeout):
        pass


class Failing:
    def __init__(self, error):
        self.error = error

    def request(self, *args, **kwargs):
        return fail(self.error)


class Never:
    """
    A backend that never answers; records cancellation.
    """

    cancelled = False

    def request(self, *args, **kwargs):
        def cancel(deferred):
            self.cancelled = True

        return Deferred(cancel)
