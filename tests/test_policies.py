"""
The pure decisions of the on-demand and always-on policies.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config import Policy
from orchestrator.policies import (
    Admission,
    WakeFailed,
    admit,
    idle_deadline,
    next_probe_delay,
    path_is_ignored,
    user_agent_is_ignored,
    wake_progress,
)
from orchestrator.states import AgentState
from orchestrator.swarm import ServiceStatus, TaskStatus


def decide(state, policy=Policy.ON_DEMAND, running=False, ignored=False, now=100.0, allowed=0.0):
    return admit(policy=policy, state=state, backend_running=running, ignored=ignored,
                 now=now, wake_allowed_at=allowed)


class AdmissionTests(SynchronousTestCase):
    def test_ready_agent_gets_the_request(self):
        self.assertIs(decide(AgentState.READY), Admission.FORWARD)

    def test_sleeping_agent_is_woken(self):
        self.assertIs(decide(AgentState.SLEEPING), Admission.WAKE)

    def test_starting_agent_is_not_woken_again(self):
        self.assertIs(decide(AgentState.STARTING), Admission.REJECT)

    def test_uptime_monitor_never_wakes_a_sleeping_agent(self):
        self.assertIs(decide(AgentState.SLEEPING, ignored=True), Admission.REJECT)

    def test_degraded_agent_with_a_running_backend_still_gets_traffic(self):
        self.assertIs(decide(AgentState.DEGRADED, running=True), Admission.FORWARD)

    def test_failed_wake_is_retried_only_after_wake_retry(self):
        self.assertIs(decide(AgentState.DEGRADED, now=10, allowed=30), Admission.REJECT)
        self.assertIs(decide(AgentState.DEGRADED, now=30, allowed=30), Admission.WAKE)

    def test_always_on_agent_is_never_woken(self):
        for state in AgentState:
            self.assertIsNot(decide(state, policy=Policy.ALWAYS_ON), Admission.WAKE)

    def test_always_on_degraded_agent_keeps_routing(self):
        self.assertIs(decide(AgentState.DEGRADED, policy=Policy.ALWAYS_ON, running=True),
                      Admission.FORWARD)

    @given(st.sampled_from(AgentState), st.sampled_from(Policy), st.booleans(), st.booleans(),
           st.floats(0, 1e6), st.floats(0, 1e6))
    def test_only_sleeping_or_degraded_on_demand_agents_are_woken(
            self, state, policy, running, ignored, now, allowed):
        result = admit(policy=policy, state=state, backend_running=running, ignored=ignored,
                       now=now, wake_allowed_at=allowed)
        if result is Admission.WAKE:
            self.assertIs(policy, Policy.ON_DEMAND)
            self.assertFalse(ignored)
            self.assertIn(state, (AgentState.SLEEPING, AgentState.DEGRADED))


class IdleTests(SynchronousTestCase):
    def test_idle_long_enough_sleeps(self):
        self.assertIsNone(idle_deadline(last_activity=0, in_flight=0, timeout=900, now=900))

    def test_recent_activity_moves_the_deadline(self):
        self.assertEqual(idle_deadline(last_activity=100, in_flight=0, timeout=900, now=900), 1000)

    def test_request_in_flight_keeps_awake(self):
        self.assertEqual(idle_deadline(last_activity=0, in_flight=1, timeout=900, now=5000), 5900)


def status(*tasks, replicas=1):
    return ServiceStatus("svc", replicas, tuple(tasks))


class WakeProgressTests(SynchronousTestCase):
    def test_running_task_means_probe_now(self):
        self.assertTrue(wake_progress(status(TaskStatus("t2", "running", "running")), frozenset()))

    def test_pending_task_means_wait(self):
        self.assertFalse(wake_progress(status(TaskStatus("t2", "pending", "running")), frozenset()))

    def test_new_rejected_task_fails_the_wake_with_swarms_reason(self):
        task = TaskStatus("t2", "rejected", "running", error="No such image: x:1")
        error = self.assertRaises(WakeFailed, wake_progress, status(task), frozenset())
        self.assertIn("No such image: x:1", str(error))

    def test_old_failed_task_is_history(self):
        old = TaskStatus("t1", "failed", "shutdown", error="exit 1")
        self.assertFalse(wake_progress(status(old), frozenset({"t1"})))

    def test_scaled_to_zero_by_someone_else_fails_the_wake(self):
        self.assertRaises(WakeFailed, wake_progress, status(replicas=0), frozenset())


class SmallRuleTests(SynchronousTestCase):
    def test_probe_delay_is_fast_early_in_a_wake_and_backs_off(self):
        self.assertEqual([next_probe_delay(t) for t in (0, 4.9, 5, 14.9, 15, 300)],
                         [0.05, 0.05, 0.25, 0.25, 1.0, 1.0])

    def test_ignored_paths_exact_and_prefix(self):
        self.assertTrue(path_is_ignored("/healthz", ("/healthz",)))
        self.assertFalse(path_is_ignored("/healthz2", ("/healthz",)))
        self.assertTrue(path_is_ignored("/status/db", ("/status/*",)))

    def test_ignored_user_agents_by_substring_any_case(self):
        self.assertTrue(user_agent_is_ignored("Mozilla/5.0 (UptimeRobot/2.0)", ("uptimerobot",)))
        self.assertFalse(user_agent_is_ignored("curl/8", ("uptimerobot",)))


class DyingTaskTests(SynchronousTestCase):
    def test_task_being_shut_down_does_not_make_a_wake_ready(self):
        # Right after a scale-down Swarm still shows the old task running, desired
        # "shutdown": it answers probes for its stop grace period, then dies.
        dying = TaskStatus("t1", "running", "shutdown")
        self.assertFalse(wake_progress(status(dying), frozenset({"t1"})))
