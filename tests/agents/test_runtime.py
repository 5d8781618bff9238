"""
One agent's runtime, driven by a Clock against a fake Swarm: reconciliation, the wake
single-flight, readiness, idle sleep with drain, health, and shutdown.
"""

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import HealthConfig, IdleConfig, Policy
from orchestrator.policy.admission import Admission
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import DrainableConnection, HeldSwarm, make_agent


class ReconciliationTests(SynchronousTestCase):
    def test_service_at_zero_replicas_is_sleeping(self):
        fixture = make_agent(replicas=0)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertEqual(fixture.bus.types(), ["agent.reconciled"])

    def test_missing_service_is_degraded_with_a_clear_reason(self):
        fixture = make_agent(exists=False)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        self.assertIn("no Swarm service named 'alpha'", fixture.agent.reason)
        self.assertIn("agent.degraded", fixture.bus.types())

    def test_an_agent_already_degraded_is_not_announced_again(self):
        # The event stream's re-read and the reconciliation both find the service
        # missing: one agent.degraded, two reconciliations.
        fixture = make_agent(exists=False)
        fixture.agent.start()
        self.assertEqual(fixture.bus.types(), ["agent.reconciled", "agent.degraded",
                                               "agent.reconciled"])

    def test_running_service_stays_up_without_a_scale_call(self):
        fixture = make_agent(replicas=1)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(fixture.swarm.scale_calls, [])

    def test_running_service_idle_clock_starts_at_reconciliation(self):
        fixture = make_agent(replicas=1)
        fixture.clock.advance(899)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_unreachable_engine_degrades_then_retries(self):
        swarm = FakeSwarm()
        swarm.available = False
        fixture = make_agent(replicas=0, swarm=swarm)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        swarm.available = True
        fixture.clock.advance(10)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)


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


class SleepTests(SynchronousTestCase):
    def awake(self, **config):
        fixture = make_agent(**config)
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(0.05)
        self.assertIs(fixture.agent.state, AgentState.READY)
        return fixture

    def test_idle_agent_sleeps_after_the_timeout(self):
        fixture = self.awake()
        fixture.clock.advance(899)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1), ("alpha", 0)])
        self.assertEqual(fixture.bus.types()[-1], "agent.sleep")

    def test_activity_moves_the_sleep_back(self):
        fixture = self.awake()
        fixture.clock.advance(500)
        fixture.agent.request_started()
        fixture.agent.request_finished()
        fixture.clock.advance(400)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(500)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_request_in_flight_keeps_the_agent_awake(self):
        fixture = self.awake()
        fixture.agent.request_started()
        fixture.clock.advance(5000)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.agent.request_finished()
        fixture.clock.advance(900)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_open_connections_are_asked_to_go_away_then_aborted(self):
        fixture = self.awake(idle=IdleConfig(timeout=900, drain_timeout=30))
        connection = DrainableConnection(fixture.agent.connections)
        fixture.clock.advance(900)
        self.assertTrue(connection.asked)
        self.assertIs(fixture.agent.state, AgentState.READY)  # draining, still routable
        fixture.clock.advance(30)
        self.assertTrue(connection.aborted)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_activity_during_the_drain_calls_the_sleep_off(self):
        fixture = self.awake()
        DrainableConnection(fixture.agent.connections)
        fixture.clock.advance(900)
        fixture.agent.request_started()
        fixture.agent.request_finished()
        fixture.clock.advance(30)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1)])

    def test_request_during_scale_down_wakes_after_it(self):
        swarm = HeldSwarm()
        fixture = make_agent(swarm=swarm)
        fixture.agent.admit(ignored=False)
        swarm.release()
        fixture.clock.advance(0.05)
        fixture.clock.advance(900)  # idle: scale to 0 requested, not done yet
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertIs(fixture.agent.admit(ignored=False), Admission.WAKE)
        self.assertEqual([replicas for _, _, replicas in swarm.held], [0])
        swarm.release()  # scale-down completes; the wake goes on
        self.assertEqual([replicas for _, _, replicas in swarm.held], [1])
        swarm.release()
        fixture.clock.advance(0.05)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(swarm.scale_calls, [("alpha", 1), ("alpha", 0), ("alpha", 1)])


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
