"""
One agent's runtime as a whole: stopping it, and the status it reports.
"""

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Policy
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import make_agent


class StopTests(SynchronousTestCase):
    def test_stop_never_scales(self):
        fixture = make_agent()
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(0.05)
        fixture.agent.stop()
        fixture.clock.advance(10_000)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1)])

    def test_stop_cancels_a_wake_in_progress(self):
        fixture = make_agent(healthy=False)
        fixture.agent.admit(ignored=False)
        fixture.agent.stop()
        probes = fixture.prober.probes
        fixture.clock.advance(100)
        self.assertEqual(fixture.prober.probes, probes)
        self.assertEqual(fixture.clock.getDelayedCalls(), [])


class StatusTests(SynchronousTestCase):
    def test_an_awake_agent_says_when_it_will_sleep_and_how_its_wake_went(self):
        fixture = make_agent(replicas=0, swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(0.5)
        fixture.swarm.run_tasks("alpha")
        fixture.clock.advance(0.05)  # the next look finds it running and probes it
        fixture.clock.advance(100)
        status = fixture.agent.status()
        self.assertEqual(status.since, 1000.55)
        self.assertEqual(status.sleeps_at, 1000.55 + 900)
        [wake] = status.recent_wakes
        self.assertEqual((wake.started, wake.seconds, wake.succeeded), (1000, 0.55, True))
        self.assertEqual(set(wake.phases), {"scheduling", "probing"})

    def test_a_request_in_flight_postpones_any_sleep(self):
        fixture = make_agent(replicas=1)
        fixture.agent.request_started()
        self.assertIsNone(fixture.agent.status().sleeps_at)

    def test_a_failed_wake_is_recorded_as_failed(self):
        fixture = make_agent(replicas=0)
        fixture.swarm.missing_images.add("agent:latest")
        fixture.agent.admit(ignored=False)
        [wake] = fixture.agent.status().recent_wakes
        self.assertFalse(wake.succeeded)

    def test_always_on_agents_never_sleep(self):
        fixture = make_agent(replicas=1, policy=Policy.ALWAYS_ON)
        self.assertIsNone(fixture.agent.status().sleeps_at)
