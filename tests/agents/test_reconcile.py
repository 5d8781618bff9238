"""
Reading Swarm for every agent at once: at start and when the event stream (re)opens,
two calls however many agents, and one retry for all while the engine is away.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.reconcile import Reconciler
from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.agents.sync import RECONCILE_RETRY
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from orchestrator.swarm.watcher import SwarmWatcher
from tests.helpers import CallCountingSwarm, RecordingBus, ScriptedProber, agent_config


def make_fleet(count: int, running: tuple[str, ...] = (), missing: tuple[str, ...] = (),
               available: bool = True):
    clock = MemoryReactorClock()
    clock.advance(1000)
    swarm = CallCountingSwarm()
    bus = RecordingBus(clock)
    prober = ScriptedProber()
    names = [f"agent{number:04}" for number in range(count)]
    for name in names:
        if name not in missing:
            swarm.add_service(name, replicas=1 if name in running else 0)
    registry = AgentRegistry(lambda config: Agent(config, swarm=swarm, prober=prober, bus=bus,
                                                  reactor=clock), bus=bus)
    registry.load([agent_config(name) for name in names])
    swarm.available = available
    reconciler = Reconciler(registry, swarm, clock)
    reconciler.start(registry.values())
    return clock, swarm, registry, reconciler


class StartTests(SynchronousTestCase):
    def test_a_thousand_agents_are_reconciled_with_one_read_of_every_service(self):
        _, swarm, registry, _ = make_fleet(1000)
        self.assertEqual(swarm.calls["statuses"], 1)
        self.assertEqual(swarm.total, 1)
        self.assertTrue(all(agent.state is AgentState.SLEEPING for agent in registry.values()))

    def test_an_agent_found_running_is_probed_as_after_a_restart(self):
        _, _, registry, _ = make_fleet(3, running=("agent0001",))
        self.assertIs(registry["agent0001"].state, AgentState.READY)
        self.assertIs(registry["agent0000"].state, AgentState.SLEEPING)

    def test_a_missing_service_degrades_its_agent_only(self):
        _, _, registry, _ = make_fleet(3, missing=("agent0002",))
        self.assertIs(registry["agent0002"].state, AgentState.DEGRADED)
        self.assertEqual(registry["agent0002"].reason, "no Swarm service named 'agent0002'")
        self.assertIs(registry["agent0001"].state, AgentState.SLEEPING)

    def test_an_unreachable_engine_is_tried_again_for_all_with_one_timer(self):
        clock, swarm, registry, _ = make_fleet(100, available=False)
        self.assertTrue(all(agent.state is AgentState.DEGRADED for agent in registry.values()))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        swarm.available = True
        clock.advance(RECONCILE_RETRY)
        self.assertTrue(all(agent.state is AgentState.SLEEPING for agent in registry.values()))
        self.assertEqual((swarm.calls["statuses"], swarm.calls["status"]), (2, 0))
        self.assertEqual(clock.getDelayedCalls(), [])


class EverythingChangedTests(SynchronousTestCase):
    def test_the_event_stream_opening_is_one_read_for_every_agent(self):
        clock, swarm, registry, reconciler = make_fleet(500)
        watcher = SwarmWatcher(swarm, reconciler, bus=RecordingBus(clock), clock=clock)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        self.assertEqual((swarm.calls["statuses"], swarm.calls["status"]), (2, 0))

    def test_what_changed_meanwhile_is_acted_on(self):
        _, swarm, registry, reconciler = make_fleet(2, running=("agent0001",))
        swarm.scale("agent0001", 0)
        reconciler.everything_changed()
        self.assertIs(registry["agent0001"].state, AgentState.SLEEPING)

    def test_news_during_a_read_reads_once_more_after_it(self):
        _, swarm, registry, reconciler = make_fleet(2)
        held: list[Deferred] = []
        swarm.statuses = lambda: held.append(Deferred()) or held[-1]
        for _ in range(3):
            reconciler.everything_changed()
        self.assertEqual(len(held), 1)
        held[0].callback(FakeSwarm.statuses(swarm).result)
        self.assertEqual(len(held), 2)
        held[1].callback(FakeSwarm.statuses(swarm).result)
        self.assertEqual(len(held), 2)
        self.successResultOf(reconciler.when_read())

    def test_news_of_one_service_reaches_its_agent_alone(self):
        _, swarm, registry, reconciler = make_fleet(3)
        swarm.calls = dict.fromkeys(swarm.CALLS, 0)
        reconciler.service_changed("agent0001", ())
        self.assertEqual((swarm.calls["status"], swarm.calls["statuses"]), (1, 0))
