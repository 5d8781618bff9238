"""
When an idle on-demand agent sleeps.
"""

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Policy
from orchestrator.policy.idle import idle_deadline, sleeps_when_idle
from orchestrator.states import AgentState


class IdleTests(SynchronousTestCase):
    def test_idle_long_enough_sleeps(self):
        self.assertIsNone(idle_deadline(last_activity=0, in_flight=0, timeout=900, now=900))

    def test_recent_activity_moves_the_deadline(self):
        self.assertEqual(idle_deadline(last_activity=100, in_flight=0, timeout=900, now=900), 1000)

    def test_request_in_flight_keeps_awake(self):
        self.assertEqual(idle_deadline(last_activity=0, in_flight=1, timeout=900, now=5000), 5900)


class WhoSleepsTests(SynchronousTestCase):
    def test_a_ready_on_demand_agent_sleeps_when_idle(self):
        self.assertTrue(sleeps_when_idle(policy=Policy.ON_DEMAND, state=AgentState.READY,
                                         backend_running=True))

    def test_a_degraded_on_demand_agent_whose_task_runs_sleeps_when_idle(self):
        # A hung agent (its probes fail) must not keep its replica forever.
        self.assertTrue(sleeps_when_idle(policy=Policy.ON_DEMAND, state=AgentState.DEGRADED,
                                         backend_running=True))

    def test_a_failed_wake_has_nothing_to_put_to_sleep(self):
        self.assertFalse(sleeps_when_idle(policy=Policy.ON_DEMAND, state=AgentState.DEGRADED,
                                          backend_running=False))

    def test_always_on_agents_never_sleep(self):
        for state in AgentState:
            self.assertFalse(sleeps_when_idle(policy=Policy.ALWAYS_ON, state=state,
                                              backend_running=True))

    def test_sleeping_or_starting_agents_are_not_put_to_sleep(self):
        for state in (AgentState.SLEEPING, AgentState.STARTING):
            self.assertFalse(sleeps_when_idle(policy=Policy.ON_DEMAND, state=state,
                                              backend_running=True))
