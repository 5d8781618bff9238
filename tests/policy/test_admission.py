"""
What the proxy does with one request: forward, wake, or answer with the state.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Policy
from orchestrator.policy.admission import Admission, admit, path_is_ignored, user_agent_is_ignored
from orchestrator.states import AgentState


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


class IgnoredRequestTests(SynchronousTestCase):
    def test_ignored_paths_exact_and_prefix(self):
        self.assertTrue(path_is_ignored("/healthz", ("/healthz",)))
        self.assertFalse(path_is_ignored("/healthz2", ("/healthz",)))
        self.assertTrue(path_is_ignored("/status/db", ("/status/*",)))

    def test_ignored_user_agents_by_substring_any_case(self):
        self.assertTrue(user_agent_is_ignored("Mozilla/5.0 (UptimeRobot/2.0)", ("uptimerobot",)))
        self.assertFalse(user_agent_is_ignored("curl/8", ("uptimerobot",)))
