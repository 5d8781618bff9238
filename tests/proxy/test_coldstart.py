"""
A wake seen through the proxy: estimated_wait and phases, the wake slots, X-Cold-Start
(the waiting page is tests/proxy/test_waiting.py, long-poll and hold mode
tests/proxy/test_holding.py).
"""

from twisted.internet.defer import DeferredSemaphore
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import make_agent
from tests.proxy.harness import cold_harness


class WakeTimingTests(SynchronousTestCase):
    def test_phase_moves_from_scheduling_to_probing(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False), healthy=False)
        fixture.agent.admit(ignored=False)
        self.assertEqual(fixture.agent.health()["phase"], "scheduling")
        fixture.swarm.run_tasks("alpha")
        fixture.clock.advance(0.05)
        self.assertEqual(fixture.agent.health()["phase"], "probing")

    def test_estimated_wait_absent_until_a_wake_was_measured(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        self.assertNotIn("estimated_wait", fixture.agent.health())

    def test_estimated_wait_counts_down_from_recent_wakes(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        agent, swarm, clock = fixture.agent, fixture.swarm, fixture.clock
        agent.admit(ignored=False)
        clock.advance(2)
        swarm.run_tasks("alpha")
        clock.advance(0.05)  # ready after ~2.05s
        clock.advance(900)   # asleep again
        self.assertIs(agent.state, AgentState.SLEEPING)
        agent.admit(ignored=False)
        self.assertEqual(agent.health()["estimated_wait"], 2.0)
        clock.advance(1.5)
        self.assertEqual(agent.health()["estimated_wait"], 0.5)

    def test_ready_event_carries_the_phase_durations(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(1)
        fixture.swarm.run_tasks("alpha")
        fixture.clock.advance(0.05)
        ready = [e for e in fixture.bus.events if e.type == "agent.ready"][-1]
        self.assertEqual(set(ready.fields["phases"]), {"scheduling", "probing"})
        self.assertAlmostEqual(ready.fields["wake_seconds"], 1.05, places=2)

    def test_cold_start_header_only_on_the_first_response_after_a_wake(self):
        harness = cold_harness()
        harness.get()
        harness.fixture.swarm.run_tasks("alpha")
        harness.clock.advance(0.05)
        first, second = harness.get(), harness.get()
        self.assertEqual(first.header(b"x-cold-start"), b"50")
        self.assertIsNone(second.header(b"x-cold-start"))

    def test_concurrent_wakes_are_capped_across_agents(self):
        slots = DeferredSemaphore(1)
        swarm = FakeSwarm(auto_run=False)
        swarm.add_service("beta", replicas=0)
        first = make_agent(swarm=swarm)
        from orchestrator.agents.runtime import Agent
        from tests.helpers import ScriptedProber, agent_config
        # Both agents share one slot: the second waits, "queued", without scaling.
        a = Agent(agent_config("alpha"), swarm=swarm, prober=ScriptedProber(), bus=first.bus,
                  reactor=first.clock, wake_slots=slots)
        b = Agent(agent_config("beta"), swarm=swarm, prober=ScriptedProber(), bus=first.bus,
                  reactor=first.clock, wake_slots=slots)
        a.start(), b.start()
        a.admit(ignored=False)
        b.admit(ignored=False)
        self.assertEqual(b.health()["phase"], "queued")
        self.assertEqual(swarm.scale_calls, [("alpha", 1)])
        swarm.run_tasks("alpha")
        first.clock.advance(0.05)
        self.assertIs(a.state, AgentState.READY)
        self.assertEqual(swarm.scale_calls, [("alpha", 1), ("beta", 1)])
