"""
Waking an on-demand agent: the single wake for a burst, readiness only once a task runs
and its probe passes, failures and their retry. A Clock and a fake Swarm.
"""

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.policy.admission import Admission
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import make_agent


class WakeTests(SynchronousTestCase):
    def test_request_for_sleeping_agent_wakes_it(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        self.assertIs(fixture.agent.admit(ignored=False), Admission.WAKE)
        self.assertIs(fixture.agent.state, AgentState.STARTING)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1)])

    def test_burst_of_requests_scales_exactly_once(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        admissions = [fixture.agent.admit(ignored=False) for _ in range(200)]
        self.assertEqual(admissions.count(Admission.WAKE), 1)
        self.assertEqual(admissions.count(Admission.REJECT), 199)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1)])

    def test_ready_only_once_a_task_runs_and_the_probe_passes(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False), healthy=False)
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(1)
        self.assertEqual(fixture.prober.probes, 0)  # no task runs yet: nothing to probe
        fixture.swarm.run_tasks("alpha")
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.STARTING)  # runs, not reachable yet
        fixture.prober.healthy = True
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(fixture.bus.types()[-2:], ["agent.wake", "agent.ready"])

    def test_readiness_is_detected_within_a_fast_probe(self):
        fixture = make_agent()
        fixture.prober.healthy = False
        fixture.agent.admit(ignored=False)
        fixture.prober.healthy = True
        fixture.clock.advance(0.05)
        self.assertIs(fixture.agent.state, AgentState.READY)

    def test_ignored_request_never_wakes(self):
        fixture = make_agent()
        self.assertIs(fixture.agent.admit(ignored=True), Admission.REJECT)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertEqual(fixture.swarm.scale_calls, [])

    def test_missing_image_degrades_at_once_and_scales_back_to_zero(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        fixture.swarm.fail_tasks("alpha", "No such image: agent:1")
        fixture.clock.advance(0.05)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        self.assertIn("No such image: agent:1", fixture.agent.reason)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1), ("alpha", 0)])

    def test_startup_timeout_degrades(self):
        fixture = make_agent(healthy=False)
        fixture.agent.admit(ignored=False)
        fixture.clock.pump([1] * 61)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        self.assertIn("startup_timeout 60s", fixture.agent.reason)
        self.assertIn("connection refused", fixture.agent.reason)

    def test_failed_wake_is_retried_by_a_request_after_wake_retry(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        fixture.swarm.fail_tasks("alpha", "boom")
        fixture.clock.advance(0.05)
        self.assertIs(fixture.agent.admit(ignored=False), Admission.REJECT)
        fixture.clock.advance(30)
        self.assertIs(fixture.agent.admit(ignored=False), Admission.WAKE)
        self.assertIs(fixture.agent.state, AgentState.STARTING)

    def test_degraded_health_body_carries_the_reason(self):
        fixture = make_agent(exists=False)
        body = fixture.agent.health()
        self.assertEqual(body["status"], "degraded")
        self.assertEqual(body["agent"], "alpha")
        self.assertIn("alpha", body["reason"])

    def test_waking_a_ready_agent_changes_nothing(self):
        fixture = make_agent(replicas=0)
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(0.05)
        before = fixture.bus.types()
        self.successResultOf(fixture.agent.wake(reason="admin"))
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(fixture.bus.types(), before)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1)])
