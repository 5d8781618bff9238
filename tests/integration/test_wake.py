"""
Wake on request and sleep when idle, for real: an orchestrator in front of a Swarm
service built from the local test image, driven over HTTP on loopback.
"""

import json

import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from orchestrator.admin.client import HTTPAdminClient
from orchestrator.config.model import AdminConfig
from tests.helpers import inline

from . import engine
from .running import agent_config, start_orchestrator


class WakeOnRequestTests(TestCase):
    timeout = 120

    def setUp(self):
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)
        self.service_name = engine.unique_name("wake")
        self.port = engine.free_port()
        engine.create_service(self.client, self.service_name, replicas=0, port=self.port)
        self.addCleanup(engine.remove_service, self.client, self.service_name)
        self.orchestrator = start_orchestrator(
            self, agent_config("wake", self.service_name, self.port))
        self.pool = client_pool(self)

    async def get(self, path="/"):
        response = await treq.get(self.orchestrator.proxy_url + path,
                                  headers={"Host": "wake.localhost"}, pool=self.pool)
        return response, await response.content()

    async def health(self):
        _, body = await self.get("/api/health")
        return json.loads(body)["status"]

    def replicas(self) -> int:
        spec = self.client.api.inspect_service(self.service_name)["Spec"]
        return spec["Mode"]["Replicated"]["Replicas"]

    async def until_reconciled(self):
        async def settled():
            assert await self.health() == "sleeping"

        await engine.poll_until(settled, reactor, timeout=10, interval=0.05)

    @inline
    async def test_request_wakes_the_service_then_it_sleeps_when_idle(self):
        await self.until_reconciled()
        response, body = await self.get("/index.html")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["3"])
        body = json.loads(body)
        self.assertEqual((body["status"], body["agent"]), ("starting", "wake"))

        async def ready():
            assert await self.health() == "ready"

        await engine.poll_until(ready, reactor, timeout=60, interval=0.1)
        response, body = await self.get("/index.html")
        self.assertEqual((response.code, body), (200, b"hello from httpd\n"))
        self.assertEqual(self.replicas(), 1)

        async def asleep():
            assert await self.health() == "sleeping"
            assert self.replicas() == 0

        await engine.poll_until(asleep, reactor, timeout=30, interval=0.2)
        self.assertEqual(self.orchestrator.swarm.scale_calls,
                         [(self.service_name, 1), (self.service_name, 0)])

    @inline
    async def test_burst_of_200_concurrent_requests_scales_up_exactly_once(self):
        await self.until_reconciled()
        pool = client_pool(self, persistent=False)
        responses = await gatherResults([
            treq.get(self.orchestrator.proxy_url + f"/burst/{n}",
                     headers={"Host": "wake.localhost"}, pool=pool)
            for n in range(200)
        ])
        bodies = await gatherResults([response.content() for response in responses])
        # Each request is told "starting", or, once the agent became ready during the
        # burst, reaches the backend (busybox has no /burst/N: 404). None is lost.
        for response, body in zip(responses, bodies, strict=True):
            if response.code == 503:
                self.assertEqual(json.loads(body)["status"], "starting")
            else:
                self.assertEqual(response.code, 404)
        self.assertIn(503, [response.code for response in responses])
        self.assertEqual(self.orchestrator.swarm.scale_calls, [(self.service_name, 1)])

        async def ready():
            assert await self.health() == "ready"

        await engine.poll_until(ready, reactor, timeout=60, interval=0.1)
        self.assertEqual(self.orchestrator.swarm.scale_calls, [(self.service_name, 1)])

    @inline
    async def test_first_request_after_ready_is_never_a_502(self):
        await self.until_reconciled()
        await self.get("/")
        while await self.health() != "ready":
            await engine.poll_until(_true, reactor, timeout=1, interval=0.02)
        response, _ = await self.get("/index.html")
        self.assertEqual(response.code, 200)


class UnstartableServiceTests(TestCase):
    timeout = 120

    def setUp(self):
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)

    @inline
    async def test_missing_image_degrades_with_swarms_reason_for_the_admin_only(self):
        name = engine.unique_name("noimage")
        port = engine.free_port()
        engine.create_service(self.client, name, replicas=0, port=port,
                              image="orchestrator-test/does-not-exist:1")
        self.addCleanup(engine.remove_service, self.client, name)
        token = "wake-test-token-0123456789abcdef"
        orchestrator = start_orchestrator(self, agent_config("broken", name, port),
                                          admin=AdminConfig(token=token))
        headers = {"Host": "broken.localhost"}
        pool = client_pool(self)

        async def sleeping():
            body = await (await treq.get(orchestrator.proxy_url + "/api/health", headers=headers, pool=pool)).json()
            assert body["status"] == "sleeping", body

        await engine.poll_until(sleeping, reactor, timeout=10, interval=0.05)
        await (await treq.get(orchestrator.proxy_url + "/", headers=headers, pool=pool)).content()

        async def degraded():
            body = await (await treq.get(orchestrator.proxy_url + "/api/health", headers=headers, pool=pool)).json()
            assert body["status"] == "degraded", body
            return body

        body = await engine.poll_until(degraded, reactor, timeout=60, interval=0.2)
        # The public is told the kind of failure; the admin API has Swarm's words.
        self.assertEqual(body["reason"], "a wake failed")
        admin = HTTPAdminClient(orchestrator.admin_url, token,
                                http=treq.client.HTTPClient(Agent(reactor, pool=pool)))
        self.assertIn("does-not-exist", (await admin.agent("broken"))["reason"])
        response = await treq.get(orchestrator.proxy_url + "/", headers=headers, pool=pool)
        self.assertEqual(response.code, 503)
        self.assertEqual((await response.json())["status"], "degraded")


def client_pool(test, persistent=True) -> HTTPConnectionPool:
    """
    The test client's own connection pool, closed when the test ends.
    """
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    test.addCleanup(pool.closeCachedConnections)
    return pool


async def _true():
    return True
