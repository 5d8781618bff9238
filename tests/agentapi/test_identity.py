"""
Who calls the agents' API: an agent's own token, or the overlay address of one of its
running tasks; and each caller's request budget.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agentapi.identity import (
    Identifier,
    IdentityUnavailable,
    RequestBudget,
    Unauthenticated,
    same_network,
)
from orchestrator.config.model import RegistrationConfig
from tests.agents.test_registry import RegistryHarness, config
from tests.helpers import inline

ALPHA_TOKEN = "alpha-token-0123456789"
BETA_TOKEN = "beta-token-0123456789"


class IdentityTests(SynchronousTestCase):
    def harness(self, **alpha):
        harness = RegistryHarness(config("alpha", token=ALPHA_TOKEN, **alpha),
                                  config("beta", token=BETA_TOKEN))
        self.identifier = Identifier(harness.registry, harness.swarm)
        return harness

    def task_address(self, harness, service="alpha"):
        status = self.successResultOf(harness.swarm.status(service))
        return status.running_tasks[0].addresses[0].split("/")[0]

    async def identify(self, authorization=None, peer="10.0.9.200", local="10.0.9.250"):
        return await self.identifier.identify(authorization=authorization, peer=peer,
                                              local=local)

    @inline
    async def test_an_agents_token_is_that_agent(self):
        self.harness()
        for scheme in (b"Bearer", b"bearer"):
            identity = await self.identify([scheme + b" " + BETA_TOKEN.encode()])
            self.assertEqual((identity.agent.name, identity.by), ("beta", "token"))

    @inline
    async def test_a_wrong_or_malformed_token_is_no_one_even_from_an_agents_address(self):
        harness = self.harness()
        address = self.task_address(harness)
        for authorization in ([b"Bearer nope"], [b"Basic YTpi"], [b"Bearer"]):
            with self.subTest(authorization=authorization):
                with self.assertRaises(Unauthenticated):
                    await self.identify(authorization, peer=address)

    @inline
    async def test_a_running_tasks_address_on_the_listeners_network_is_its_agent(self):
        harness = self.harness()
        identity = await self.identify(peer=self.task_address(harness, "beta"))
        self.assertEqual((identity.agent.name, identity.by), ("beta", "address"))

    @inline
    async def test_an_address_on_another_network_or_of_no_task_is_no_one(self):
        harness = self.harness()
        address = self.task_address(harness)
        for peer, local in ((address, "192.168.7.1"), ("10.0.9.201", "10.0.9.250")):
            with self.subTest(peer=peer, local=local):
                with self.assertRaises(Unauthenticated):
                    await self.identify(peer=peer, local=local)

    @inline
    async def test_the_address_of_a_task_that_stopped_is_no_one(self):
        harness = self.harness()
        address = self.task_address(harness)
        harness.swarm.scale("alpha", 0)
        with self.assertRaises(Unauthenticated):
            await self.identify(peer=address)

    @inline
    async def test_an_agent_may_accept_its_token_only(self):
        harness = self.harness(registration=RegistrationConfig(identity=("token",)))
        error = None
        try:
            await self.identify(peer=self.task_address(harness))
        except Unauthenticated as refused:
            error = refused
        self.assertIn("does not accept its address", str(error))
        identity = await self.identify([b"Bearer " + ALPHA_TOKEN.encode()])
        self.assertEqual(identity.agent.name, "alpha")

    @inline
    async def test_an_agent_may_accept_its_address_only(self):
        self.harness(registration=RegistrationConfig(identity=("address",)))
        with self.assertRaises(Unauthenticated):
            await self.identify([b"Bearer " + ALPHA_TOKEN.encode()])

    @inline
    async def test_two_agents_of_one_service_cannot_be_told_apart_by_address(self):
        harness = RegistryHarness(config("alpha"), config("beta", service="alpha"))
        self.identifier = Identifier(harness.registry, harness.swarm)
        with self.assertRaises(Unauthenticated):
            await self.identify(peer=self.task_address(harness))

    @inline
    async def test_an_unreachable_swarm_is_no_answer_yet(self):
        harness = self.harness()
        harness.swarm.available = False
        with self.assertRaises(IdentityUnavailable):
            await self.identify()

    def test_same_network(self):
        self.assertTrue(same_network("10.0.1.5/24", "10.0.1.200"))
        self.assertFalse(same_network("10.0.1.5/24", "10.0.2.1"))
        self.assertFalse(same_network("10.0.1.5/24", "::1"))
        self.assertFalse(same_network("nonsense", "10.0.1.1"))


class BudgetTests(SynchronousTestCase):
    def test_a_caller_gets_its_budget_then_waits_for_it_to_refill(self):
        clock = Clock()
        budget = RequestBudget(per_minute=3, clock=clock)
        self.assertEqual([budget.take("a") for _ in range(3)], [None, None, None])
        self.assertEqual(budget.take("a"), 20.0)
        self.assertIsNone(budget.take("b"))  # another caller has its own
        clock.advance(20)
        self.assertIsNone(budget.take("a"))

    def test_it_forgets_the_least_recently_seen(self):
        budget = RequestBudget(per_minute=1, clock=Clock(), tracked=2)
        budget.take("a")
        budget.take("b")
        budget.take("c")
        self.assertIsNone(budget.take("a"))  # forgotten, so a fresh budget
