"""
Small builders shared by the unit tests.
"""

from __future__ import annotations

import attrs
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.test.iosim import IOPump
from zope.interface import implementer

from orchestrator.agents.probe import IProber, ProbeResult
from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.config.model import AgentConfig, Backend, HealthConfig, IdleConfig, Policy
from orchestrator.events.bus import EventBus
from orchestrator.swarm.memory import FakeSwarm


class RecordingClient(WebSocketClientProtocol):
    """
    An Autobahn client that queues what it receives (C{(payload, isBinary)}) and fires
    C{closed} with C{(code, reason)}, for a test to await.
    """

    def onOpen(self):
        self.received = DeferredQueue()
        self.closed = Deferred()

    def onMessage(self, payload, isBinary):
        self.received.put((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        if hasattr(self, "closed"):
            self.closed.callback((code, reason))


class TCPLikeTransport(StringTransport):
    """
    A StringTransport that, like a TCP transport, lets a producer be unregistered when
    none is (Autobahn does so whenever it drops a connection), and knows its protocol
    (a WebSocket takeover replaces it).
    """

    def unregisterProducer(self) -> None:
        if self.producer is not None:
            super().unregisterProducer()


class MemoryNetwork:
    """
    The network as Twisted's L{MemoryReactor} sees it: the connection attempts the code
    under test made (through its real endpoints, C{connectTCP}), which a test accepts
    over an in-memory transport (playing the peer itself), serves with a server factory
    (an L{IOPump} between the two), refuses, or leaves pending.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        #: What was accepted: (protocol, transport), oldest first.
        self.accepted: list[tuple[object, TCPLikeTransport]] = []

    def pending(self) -> list[tuple[str, int]]:
        """
        The addresses of the attempts not yet accepted or refused, oldest first.
        """
        return [(host, port) for host, port, *_ in self._reactor.tcpClients]

    def factory(self, index: int = 0):
        """
        The factory of a pending attempt, unwrapped from its endpoint's.
        """
        factory = self._reactor.tcpClients[index][2]
        return getattr(factory, "_wrappedFactory", factory)

    def _take(self, index: int):
        host, port, factory, *_ = self._reactor.tcpClients.pop(index)
        self._reactor.connectors.pop(index)
        return IPv4Address("TCP", host, port), factory

    def accept(self, index: int = 0):
        """
        Accept a pending attempt; the test plays the peer on the returned transport.
        """
        address, factory = self._take(index)
        protocol = factory.buildProtocol(address)
        transport = TCPLikeTransport(peerAddress=address)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.accepted.append((protocol, transport))
        return protocol, transport

    def accept_all(self) -> None:
        while self._reactor.tcpClients:
            self.accept()

    def serve(self, server_factory, index: int = 0) -> IOPump:
        """
        Connect a pending attempt to a protocol of C{server_factory}; pump the returned
        L{IOPump} to move bytes between them.
        """
        address, factory = self._take(index)
        client = factory.buildProtocol(address)
        server = server_factory.buildProtocol(IPv4Address("TCP", "203.0.113.9", 40000))
        return iosim.connect(server, iosim.makeFakeServer(server), client,
                             iosim.makeFakeClient(client), clock=self._reactor)

    def refuse(self, reason: Exception | None = None, index: int = 0) -> None:
        """
        Fail a pending attempt (connection refused, by default).
        """
        factory = self._reactor.tcpClients.pop(index)[2]
        connector = self._reactor.connectors.pop(index)
        factory.clientConnectionFailed(connector, Failure(reason or ConnectionRefusedError()))


class HttpPathLog:
    """
    The log events of the HTTP path (twisted.web, the proxy, the relay, Autobahn), not
    the agents' own lifecycle events, observed for the life of a test.
    """

    _OTHERS = ("orchestrator.agents", "orchestrator.events", "orchestrator.swarm")

    def __init__(self, test) -> None:
        self._all = EventLoggingObserver.createWithCleanup(test, globalLogPublisher)

    def events(self) -> list:
        return [event for event in self._all
                if not event.get("log_namespace", "").startswith(self._OTHERS)]

    def __len__(self) -> int:
        return len(self.events())

    def __getitem__(self, index):
        return self.events()[index]

    def __iter__(self):
        return iter(self.events())


def connect_client(site, host: str = "203.0.113.9"):
    """
    A client connected to C{site} over an in-memory transport, from C{host};
    returns the server's channel and the transport that collects what it writes.
    """
    address = IPv4Address("TCP", host, 40000)
    channel = site.buildProtocol(address)
    transport = TCPLikeTransport(peerAddress=address)
    transport.protocol = channel
    channel.makeConnection(transport)
    return channel, transport


def inline(coroutine_function):
    """
    Run an C{async def} test method as a trial test (a Deferred from the coroutine).
    """

    def run(self):
        return Deferred.fromCoroutine(coroutine_function(self))

    run.__name__ = coroutine_function.__name__
    run.__doc__ = coroutine_function.__doc__
    return run


class DrainableConnection:
    """
    A connection in a L{ConnectionRegistry} that records being asked to go away or aborted.
    """

    def __init__(self, registry) -> None:
        self.registry = registry
        self.asked = self.aborted = False
        registry.add(self)

    def go_away(self) -> None:
        self.asked = True

    def abort(self) -> None:
        self.aborted = True
        self.registry.discard(self)

    def close(self) -> None:
        self.registry.discard(self)


#: What a scripted backend does when probed (L{ScriptedProber.script}).
ANSWERS, REFUSES, SILENT, NOT_HTTP = "answers", "refuses", "silent", "not_http"


@implementer(IProber)
class ScriptedProber:
    """
    The health prober of the unit tests, verified against L{HttpProber} by the same
    contract tests (C{tests/agents/test_probe.py}): each backend does what its script
    says (answers with a status, refuses connections, stays silent, speaks something
    other than HTTP), and the results read as the real prober's do. A backend with no
    script answers 200 while C{healthy}, else refuses. Probes are counted.
    """

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.probes = 0
        self._scripts: dict[object, tuple[str, int]] = {}

    def script(self, backend, behaviour: str, status: int = 200) -> None:
        self._scripts[backend] = (behaviour, status)

    def probe(self, backend, path, timeout):
        self.probes += 1
        default = (ANSWERS, 200) if self.healthy else (REFUSES, 0)
        behaviour, status = self._scripts.get(backend, default)
        if behaviour == ANSWERS:
            return succeed(ProbeResult(200 <= status < 400, f"HTTP {status}"))
        if behaviour == SILENT:
            return succeed(ProbeResult(False, f"no answer within {timeout:g}s"))
        if behaviour == NOT_HTTP:
            return succeed(ProbeResult(False, "not an HTTP/1.1 status line: b'SSH-2.0'"))
        return succeed(ProbeResult(False, "connection refused"))


class HeldProber:
    """
    Answers probes only when the test says so (L{answer}), oldest first.
    """

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    def probe(self, backend, path, timeout):
        answer: Deferred = Deferred()
        self.pending.append(answer)
        return answer

    def answer(self, ok: bool) -> None:
        detail = "HTTP 200" if ok else "connection refused"
        self.pending.pop(0).callback(ProbeResult(ok, detail))


class RecordingBus(EventBus):
    """
    An event bus that remembers what it published.
    """

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.events = []

    def publish(self, event) -> None:
        self.events.append(event)
        super().publish(event)

    def types(self, agent: str | None = None) -> list[str]:
        return [e.type for e in self.events if agent is None or e.agent == agent]


class CallCountingSwarm(FakeSwarm):
    """
    A fake Swarm that counts every call of the interface made of it, by name.
    """

    CALLS = ("status", "statuses", "scale", "discover", "task_at", "node_memory", "nodes",
             "events")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls: dict[str, int] = dict.fromkeys(self.CALLS, 0)
        #: The services each C{statuses(services=...)} call named, in order.
        self.statuses_asked: list[list[str]] = []

    def statuses(self, services=None):
        if services is not None:
            self.statuses_asked.append(list(services))
        return super().statuses(services)

    def __getattribute__(self, name):
        if name in CallCountingSwarm.CALLS:
            calls = object.__getattribute__(self, "calls")
            calls[name] += 1
        return object.__getattribute__(self, name)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class HeldSwarm(FakeSwarm):
    """
    A FakeSwarm whose scale calls wait until the test releases them (Swarm is slow).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.held: list[tuple[Deferred, str, int]] = []

    def scale(self, service, replicas):
        held: Deferred = Deferred()
        self.held.append((held, service, replicas))
        return held

    def release(self) -> None:
        pending, self.held = self.held, []
        for held, service, replicas in pending:
            FakeSwarm.scale(self, service, replicas).chainDeferred(held)


def agent_config(name: str = "alpha", **changes) -> AgentConfig:
    idle = changes.pop("idle", IdleConfig(timeout=900, drain_timeout=30))
    health = changes.pop("health", HealthConfig(path="/health", interval=10, timeout=2, failures=3))
    return attrs.evolve(
        AgentConfig(
            name=name,
            service=name,
            backend=Backend("http", "127.0.0.1", 18081),
            hosts=(f"{name}.example.com",),
            policy=Policy.ON_DEMAND,
            startup_timeout=60,
            wake_retry=30,
            idle=idle,
            health=health,
        ),
        **changes,
    )


@attrs.define
class AgentFixture:
    agent: Agent
    swarm: FakeSwarm
    prober: ScriptedProber
    bus: RecordingBus
    clock: MemoryReactorClock


def make_agent(replicas: int | None = 0, swarm: FakeSwarm | None = None, exists: bool = True,
               healthy: bool = True, **config) -> AgentFixture:
    """
    An agent whose service exists in a fake Swarm with C{replicas}, reconciled.
    """
    clock = MemoryReactorClock()
    clock.advance(1000)
    swarm = swarm if swarm is not None else FakeSwarm()
    conf = agent_config(**config)
    if exists:
        swarm.add_service(conf.service, replicas=replicas)
    prober = ScriptedProber(healthy)
    bus = RecordingBus(clock)
    agent = Agent(conf, swarm=swarm, prober=prober, bus=bus, reactor=clock)
    agent.start()
    return AgentFixture(agent, swarm, prober, bus, clock)


def routes_to(*agents: Agent) -> AgentRegistry:
    """
    The registry of agents made already (by L{make_agent}): the proxy's route table.
    """
    made = iter(agents)
    registry = AgentRegistry(lambda config: next(made))
    registry.load([agent.config for agent in agents])
    return registry
