"""
The one set of agents and the routes to them: reloads applied whole or not at all, and
the hosts agents register at run time, which live while their agent is awake.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.registry import AgentRegistry, Origin, UnknownRoute
from orchestrator.agents.routes import HostConflict
from orchestrator.agents.runtime import Agent
from orchestrator.config.diff import AgentChange, ConfigDiff
from orchestrator.config.model import Backend
from orchestrator.policy.registration import Refused
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import RecordingBus, ScriptedProber, agent_config

PREVIEW = "preview-1.alpha.example.com"


def config(name, **changes):
    changes.setdefault("hosts", (f"{name}.example.com", f"*.{name}.example.com"))
    return agent_config(name, **changes)


class RegistryHarness:
    """
    A registry of agents (C{alpha} and C{beta} unless C{configs} are given) on a fake
    Swarm; C{after} (the earlier harness of a restart) lends its Swarm, clock and bus;
    C{before_start} runs once the agents exist and before they reconcile.
    """

    def __init__(self, *configs, replicas=1, after=None, before_start=lambda registry: None):
        configs = configs or (config("alpha"), config("beta"))
        if after is None:
            self.clock = MemoryReactorClock()
            self.clock.advance(1000)
            self.swarm = FakeSwarm()
            self.bus = RecordingBus(self.clock)
            for c in configs:
                self.swarm.add_service(c.service, replicas=replicas)
        else:
            self.clock, self.swarm, self.bus = after.clock, after.swarm, after.bus
        self.changes = 0
        self.registry = AgentRegistry(
            lambda c: Agent(c, swarm=self.swarm, prober=ScriptedProber(), bus=self.bus,
                            reactor=self.clock), bus=self.bus)
        self.registry.on_change(self.changed)
        agents = self.registry.load(configs)
        before_start(self.registry)
        for agent in agents:
            agent.start()

    def changed(self):
        self.changes += 1

    def register(self, name="alpha", host=PREVIEW, port=3000):
        backend = Backend("http", "127.0.0.1", port)
        return self.registry.register(name, host, backend, self.clock.seconds())


class RegisteredRouteTests(SynchronousTestCase):
    def test_a_registered_host_routes_to_the_agent_and_its_backend(self):
        harness = RegistryHarness()
        harness.register()
        route = harness.registry.route(PREVIEW.upper() + ":80")
        self.assertIs(route.agent, harness.registry["alpha"])
        self.assertEqual((route.origin, route.target), (Origin.REGISTERED,
                                                        Backend("http", "127.0.0.1", 3000)))
        self.assertEqual(harness.registry.registered("alpha"), (route,))
        event = harness.bus.events[-1]
        self.assertEqual((event.type, event.agent, event.fields["host"]),
                         ("route.registered", "alpha", PREVIEW))
        self.assertEqual(harness.changes, 1)

    def test_a_configured_route_goes_to_the_agents_own_backend(self):
        harness = RegistryHarness()
        route = harness.registry.route("alpha.example.com")
        self.assertEqual((route.origin, route.target),
                         (Origin.CONFIG, harness.registry["alpha"].config.backend))

    def test_another_agents_host_is_refused_and_nothing_changes(self):
        harness = RegistryHarness()
        refused = self.assertRaises(Refused, harness.register, "beta", PREVIEW)
        self.assertEqual(refused.code, 403)
        self.assertIs(harness.registry.match(PREVIEW), harness.registry["alpha"])
        self.assertEqual(harness.changes, 0)

    def test_a_host_registered_by_one_is_taken_for_another_under_a_shared_wildcard(self):
        shared = ("*.shared.example.com",)
        harness = RegistryHarness(config("alpha", hosts=("alpha.example.com", *shared)),
                                  config("beta", hosts=("*.team.shared.example.com",)))
        refused = self.assertRaises(Refused, harness.register, "alpha",
                                    "x.team.shared.example.com")
        self.assertEqual(refused.code, 409)

    def test_a_sleeping_agent_registers_nothing(self):
        harness = RegistryHarness(replicas=0)
        self.assertEqual(self.assertRaises(Refused, harness.register).code, 409)

    def test_routes_end_when_the_agent_sleeps_and_the_host_falls_back_to_it(self):
        harness = RegistryHarness()
        harness.register()
        self.successResultOf(harness.registry["alpha"].sleep(reason="admin"))
        self.assertEqual(harness.registry.registered(), ())
        removed = [e for e in harness.bus.events if e.type == "route.removed"]
        self.assertEqual(removed[0].fields, {"host": PREVIEW, "reason": "the agent slept"})
        route = harness.registry.route(PREVIEW)
        self.assertEqual((route.agent.name, route.origin), ("alpha", Origin.CONFIG))
        self.assertIs(route.agent.state, AgentState.SLEEPING)

    def test_an_agent_removes_its_own_route_only(self):
        harness = RegistryHarness()
        harness.register()
        self.assertEqual(self.assertRaises(Refused, harness.registry.unregister, "beta",
                                           PREVIEW).code, 403)
        harness.registry.unregister("alpha", PREVIEW)
        self.assertRaises(UnknownRoute, harness.registry.unregister, "alpha", PREVIEW)
        self.assertEqual(harness.registry.route(PREVIEW).origin, Origin.CONFIG)

    def test_leases_changing_are_changes_to_keep(self):
        harness = RegistryHarness()
        harness.registry["alpha"].leases.acquire(seconds=60, reason="")
        self.assertEqual(harness.changes, 1)


class ReloadTests(SynchronousTestCase):
    def test_a_change_that_cannot_be_made_changes_nothing(self):
        harness = RegistryHarness()
        before = dict(harness.registry)
        clash = config("gamma", hosts=("alpha.example.com",))
        self.assertRaises(HostConflict, harness.registry.apply, ConfigDiff(added=(clash,)))
        self.assertEqual(dict(harness.registry), before)
        self.assertIs(harness.registry.match("alpha.example.com"), before["alpha"])

    def test_registered_routes_of_a_changed_agent_survive(self):
        harness = RegistryHarness()
        harness.register()
        old = harness.registry["alpha"].config
        new = config("alpha", startup_timeout=90)
        harness.registry.apply(ConfigDiff(changed=(AgentChange(old, new),)))
        self.assertEqual(harness.registry.route(PREVIEW).origin, Origin.REGISTERED)

    def test_registered_routes_of_a_removed_or_replaced_agent_go(self):
        for change in (ConfigDiff(removed=("alpha",)),
                       ConfigDiff(changed=(AgentChange(config("alpha"),
                                                       config("alpha", service="alpha2")),))):
            with self.subTest(change=change):
                harness = RegistryHarness()
                harness.register()
                harness.registry.apply(change)
                self.assertEqual(harness.registry.registered(), ())
                self.assertEqual(harness.bus.events[-1].fields["reason"],
                                 "the agent was removed or replaced")

    def test_a_host_the_configuration_comes_to_route_is_the_configurations(self):
        harness = RegistryHarness()
        harness.register()
        old = harness.registry["beta"].config
        new = config("beta", hosts=("beta.example.com", PREVIEW))
        harness.registry.apply(ConfigDiff(changed=(AgentChange(old, new),)))
        self.assertIs(harness.registry.match(PREVIEW), harness.registry["beta"])
        self.assertEqual(harness.registry.registered(), ())
