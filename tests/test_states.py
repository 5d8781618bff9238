"""
The state table: every allowed transition names its event; everything else is refused.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.states import TRANSITIONS, AgentState, InvalidTransition, transition_event


class StateTableTests(SynchronousTestCase):
    def test_states_render_as_the_documented_names(self):
        self.assertEqual([s.value for s in AgentState],
                         ["sleeping", "starting", "ready", "degraded"])

    def test_wake_sleep_cycle(self):
        S, ST, R = AgentState.SLEEPING, AgentState.STARTING, AgentState.READY
        self.assertEqual([transition_event("a", S, ST), transition_event("a", ST, R),
                          transition_event("a", R, S)],
                         ["agent.wake", "agent.ready", "agent.sleep"])

    def test_sleeping_agent_cannot_become_ready_without_starting(self):
        self.assertRaises(InvalidTransition, transition_event, "a",
                          AgentState.SLEEPING, AgentState.READY)

    @given(st.sampled_from(AgentState), st.sampled_from(AgentState))
    def test_every_pair_is_either_in_the_table_or_refused(self, old, new):
        if (old, new) in TRANSITIONS:
            self.assertTrue(transition_event("a", old, new).startswith("agent."))
        else:
            self.assertRaises(InvalidTransition, transition_event, "a", old, new)
