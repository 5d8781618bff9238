"""
The health loop of an awake agent: always-on agents degraded after consecutive failed
probes and ready again when one passes, flapping health, and never a scale call.
"""

from __future__ import annotations

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import HealthConfig, Policy
from orchestrator.policy.admission import Admission
from orchestrator.policy.probes import probe_phase
from orchestrator.states import AgentState
from tests.agents.world import ALWAYS_ON, make_world
from tests.helpers import HeldProber, make_agent


class AlwaysOnTests(SynchronousTestCase):
    def make(self, healthy=True):
        return make_agent(replicas=1, healthy=healthy, policy=Policy.ALWAYS_ON,
                          health=HealthConfig(interval=10, failures=3))

    def test_healthy_always_on_agent_is_ready(self):
        fixture = self.make()
        self.assertIs(fixture.agent.state, AgentState.READY)

    def test_degraded_after_consecutive_failures_then_recovered(self):
        fixture = self.make()
        fixture.prober.healthy = False
        fixture.clock.pump([10, 10])
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(10)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        self.assertEqual(fixture.bus.types().count("agent.health_failed"), 3)
        fixture.prober.healthy = True
        fixture.clock.advance(10)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(fixture.bus.types()[-1], "agent.recovered")

    def test_never_scales_and_keeps_routing_when_degraded(self):
        fixture = self.make(healthy=False)
        fixture.clock.pump([10] * 10)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        self.assertIs(fixture.agent.admit(ignored=False), Admission.FORWARD)
        self.assertEqual(fixture.swarm.scale_calls, [])


class AlwaysOnFlappingTests(SynchronousTestCase):
    """
    The always-on policy driven by the clock: health flaps, events follow, and nothing is
    ever scaled.
    """

    def test_flapping_health_produces_the_documented_events_and_no_scale_call(self):
        world = make_world(("alpha", {**ALWAYS_ON,
                                      "health": HealthConfig(interval=10, failures=3)}))
        script = [True, False, False, True, False, False, False, False, True, True, False]
        for healthy in script:
            world.prober.healthy = healthy
            world.clock.advance(10)
        types = [t for t in world.bus.types("alpha") if t != "agent.reconciled"]
        self.assertEqual(types, [
            "agent.ready",
            "agent.health_failed", "agent.health_failed",
            "agent.health_failed", "agent.health_failed",
            "agent.health_failed", "agent.degraded",
            "agent.health_failed",
            "agent.recovered",
            "agent.health_failed",
        ])
        consecutive = [e.fields["consecutive"] for e in world.bus.events
                       if e.type == "agent.health_failed"]
        self.assertEqual(consecutive, [1, 2, 1, 2, 3, 4, 1])
        self.assertEqual(world.swarm.scale_calls, [])
        self.assertIs(world.agent().state, AgentState.READY)


class LateProbeTests(SynchronousTestCase):
    """
    A probe sent while the agent was awake whose answer arrives after it went to sleep
    is not news: it neither wakes the agent on paper nor degrades it.
    """

    def asleep_with_a_probe_out(self):
        fixture = make_agent(replicas=0)
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(0.05)
        held = HeldProber()
        fixture.prober.probe = held.probe
        fixture.clock.advance(10)  # a health probe goes out and is not answered
        self.assertEqual(len(held.pending), 1)
        fixture.swarm.scale("alpha", 0)  # someone scales it to 0: it sleeps
        fixture.agent.service_changed()
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        return fixture, held

    def test_a_passing_answer_after_the_agent_slept_is_ignored(self):
        fixture, held = self.asleep_with_a_probe_out()
        held.answer(ok=True)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_failing_answers_after_the_agent_slept_do_not_degrade_it(self):
        fixture, held = self.asleep_with_a_probe_out()
        held.answer(ok=False)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertNotIn("agent.health_failed", fixture.bus.types())


class SpreadProbeTests(SynchronousTestCase):
    """
    Agents awake together are probed apart, each on its own phase within the interval.
    """

    def probe_times(self, world, seconds: float) -> list[float]:
        times = []
        probe = world.prober.probe

        def recording(backend, path, timeout):
            times.append(world.clock.seconds())
            return probe(backend, path, timeout)

        world.prober.probe = recording
        for _ in range(int(seconds * 10)):
            world.clock.advance(0.1)
        return times

    def test_agents_found_awake_together_are_probed_at_different_moments(self):
        names = [f"agent{number:02}" for number in range(50)]
        world = make_world(*((name, {**ALWAYS_ON, "health": HealthConfig(interval=10)})
                             for name in names))
        times = self.probe_times(world, 10)
        self.assertEqual(len(times), 50)  # each once per interval...
        per_second = Counter(int(time - world.clock.seconds()) for time in times)
        self.assertLessEqual(max(per_second.values()), 10)  # ...not all on one tick

    def test_each_agent_keeps_its_phase(self):
        world = make_world(("alpha", {**ALWAYS_ON, "health": HealthConfig(interval=10)}))
        times = self.probe_times(world, 30)
        self.assertEqual(len(times), 3)
        phase = probe_phase("alpha", 10)
        for time in times:
            # Up to a tenth late to start, a tenth late to tick: the clock moves by tenths.
            off = (time - phase) % 10
            self.assertLess(min(off, 10 - off), 0.21)

    def test_a_sleeping_agent_has_no_health_timer(self):
        world = make_world(("alpha", {}))
        self.assertIs(world.agent().state, AgentState.SLEEPING)
        self.assertEqual(world.clock.getDelayedCalls(), [])
