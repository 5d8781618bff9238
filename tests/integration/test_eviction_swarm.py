"""
The host's budget on the real Swarm: three services that reserve memory, a budget for
two. Waking them in turn evicts the least recently used idle one, the containers that
run never reserve more than the budget (sampled all along from the engine itself), and
a busy agent (a request in flight, a lease) is never evicted: the wake waits, its client
told "capacity", until one is idle.
"""

from __future__ import annotations

import json

import treq
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import TestCase

from orchestrator.config.model import IdleConfig, LimitsConfig
from tests.helpers import inline

from . import engine
from .running import agent_config, start_orchestrator
from .test_wake import client_pool

MiB = 1024 * 1024
#: What each test service reserves, and the budget: room for two.
RESERVATION = 32 * MiB
BUDGET = 64 * MiB
LIMITS = LimitsConfig(memory=BUDGET, min_awake=0, min_idle=5, queue_timeout=60)
NAMES = ("alpha", "beta", "gamma")


class ContainerSampler:
    """
    Lists the running containers of the test services every 50 ms (from a thread: the
    Docker client blocks), for as long as the test runs.
    """

    def __init__(self, client, services: dict[str, str]) -> None:
        self._client = client
        #: service name -> agent name
        self._services = services
        self.samples: list[frozenset[str]] = []
        self._loop = LoopingCall(self._sample)
        self._loop.clock = reactor

    def start(self, test) -> None:
        running = self._loop.start(0.05)
        test.addCleanup(lambda: (self._loop.stop(), running)[1])

    def _sample(self) -> Deferred:
        def listed():
            containers = self._client.containers.list(
                filters={"label": "com.docker.swarm.service.name"})
            return frozenset(
                self._services[name] for container in containers
                if (name := container.labels.get("com.docker.swarm.service.name"))
                in self._services)

        return threads.deferToThread(listed).addCallback(self.samples.append)

    def most(self) -> tuple[int, frozenset[str]]:
        """
        The most memory the running containers reserved in one sample, and which ran.
        """
        worst = max(self.samples, key=len, default=frozenset())
        return len(worst) * RESERVATION, worst


class SlowUpload(Protocol):
    """
    A request whose body is only half sent: in flight until the test finishes it.
    """

    def __init__(self, host: str) -> None:
        self.host = host.encode("ascii")

    def connectionMade(self) -> None:
        self.transport.write(b"POST /cgi-bin/echo HTTP/1.1\r\nHost: " + self.host +
                             b"\r\nContent-Length: 10\r\n\r\nhalf!")

    def finish(self) -> None:
        self.transport.write(b"done!")


class EvictionTests(TestCase):
    timeout = 180

    def setUp(self):
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)
        self.services = {}
        configs = []
        for name in NAMES:
            service, port = engine.unique_name(f"evict-{name}"), engine.free_port()
            engine.create_service(self.client, service, replicas=0, port=port,
                                  memory_reservation=RESERVATION)
            self.addCleanup(engine.remove_service, self.client, service)
            self.services[service] = name
            configs.append(agent_config(name, service, port,
                                        idle=IdleConfig(timeout=600, drain_timeout=1)))
        self.orchestrator = start_orchestrator(self, *configs, limits=LIMITS)
        self.pool = client_pool(self)
        self.sampler = ContainerSampler(self.client, self.services)
        self.sampler.start(self)

    async def get(self, name: str, path: str = "/index.html", **headers):
        response = await treq.get(self.orchestrator.proxy_url + path, pool=self.pool,
                                  headers={"Host": f"{name}.localhost", **headers})
        return response.code, await response.content()

    async def health(self, name: str) -> dict:
        return json.loads((await self.get(name, "/api/health"))[1])

    async def until(self, name: str, state: str, timeout: float = 60) -> dict:
        async def reached():
            body = await self.health(name)
            assert body["status"] == state, body
            return body

        return await engine.poll_until(reached, reactor, timeout=timeout, interval=0.05)

    async def woken(self, name: str) -> None:
        """
        Wake C{name} as a client that waits for it does (C{Prefer: wait=60}).
        """
        code, body = await self.get(name, Prefer="wait=60")
        self.assertEqual((code, body), (200, b"hello from httpd\n"))

    def replicas(self) -> dict[str, int]:
        return {self.services[service]: self.client.api.inspect_service(service)["Spec"]
                ["Mode"]["Replicated"]["Replicas"] for service in self.services}

    def assert_within_budget(self) -> None:
        most, which = self.sampler.most()
        self.assertGreater(len(self.sampler.samples), 20)
        self.assertLessEqual(most, BUDGET, f"{sorted(which)} ran at once")

    @inline
    async def test_waking_in_turn_evicts_the_least_recently_used_within_the_budget(self):
        for name in NAMES:
            await self.until(name, "sleeping", timeout=10)
        await self.woken("alpha")
        await self.woken("beta")
        await self.woken("gamma")  # alpha, the least recently used, makes room
        self.assertEqual((await self.health("alpha"))["status"], "sleeping")
        self.assertEqual(self.replicas(), {"alpha": 0, "beta": 1, "gamma": 1})
        scales = [(self.services[service], replicas)
                  for service, replicas in self.orchestrator.swarm.scale_calls]
        self.assertEqual(scales, [("alpha", 1), ("beta", 1), ("alpha", 0), ("gamma", 1)])
        [record] = self.orchestrator.agent("gamma").status().recent_wakes
        self.assertGreater(record.phases.get("evicting", 0), 0)
        self.assertEqual(self.orchestrator.service.agents.capacity().memory_used, BUDGET)
        self.assert_within_budget()
        self.assertEqual(self.sampler.most()[0], BUDGET)  # the sampler saw two run

    @inline
    async def test_busy_agents_are_never_evicted_and_the_wake_waits_for_room(self):
        for name in NAMES:
            await self.until(name, "sleeping", timeout=10)
        await self.woken("alpha")
        await self.woken("beta")
        upload = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", int(self.orchestrator.proxy_url
                                                         .rsplit(":", 1)[1])),
            SlowUpload("alpha.localhost"))
        self.addCleanup(lambda: upload.transport.loseConnection())

        async def in_flight():
            assert self.orchestrator.agent("alpha").in_flight == 1

        await engine.poll_until(in_flight, reactor, timeout=10, interval=0.02)
        self.orchestrator.agent("beta").leases.acquire(seconds=300, reason="a tool call")

        code, body = await self.get("gamma")  # both are busy: the wake waits
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body)["reason"], "capacity")
        await engine.poll_until(_true, reactor, timeout=3, interval=3)
        waiting = await self.health("gamma")
        self.assertEqual((waiting["status"], waiting["reason"], waiting["phase"]),
                         ("starting", "capacity", "capacity"))
        self.assertEqual(self.replicas(), {"alpha": 1, "beta": 1, "gamma": 0})

        upload.finish()  # alpha's request ends: alpha may be evicted now, beta still not
        await self.until("gamma", "ready")
        self.assertEqual((await self.health("alpha"))["status"], "sleeping")
        self.assertEqual((await self.health("beta"))["status"], "ready")
        self.assertEqual(self.replicas(), {"alpha": 0, "beta": 1, "gamma": 1})
        self.assert_within_budget()


async def _true():
    return True
