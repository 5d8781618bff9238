"""
What an agent does about what Swarm shows of its service: the pure reactions.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Policy
from orchestrator.policy.swarm import (
    Degrade,
    Recover,
    SleptElsewhere,
    Stay,
    SwarmVerdict,
    judge_service,
    react,
)
from orchestrator.states import AgentState
from orchestrator.swarm.values import ServiceStatus, TaskStatus

TASK_STATES = ["pending", "starting", "running", "failed", "rejected", "shutdown", "complete"]
DESIRED = ["running", "shutdown", "remove", "ready"]


@st.composite
def statuses(draw):
    tasks = tuple(
        TaskStatus(f"t{index}", draw(st.sampled_from(TASK_STATES)),
                   draw(st.sampled_from(DESIRED)), error=draw(st.sampled_from(["", "boom"])))
        for index in range(draw(st.integers(0, 4)))
    )
    return ServiceStatus("svc", draw(st.sampled_from([0, 1, 2])), tasks,
                         max_attempts=draw(st.sampled_from([0, 1, 3])),
                         restart_condition=draw(st.sampled_from(["any", "on-failure", "none"])))


@st.composite
def situations(draw):
    status = draw(statuses())
    dead = draw(st.lists(st.sampled_from([t.id for t in status.tasks] or ["t9"]), max_size=2))
    return dict(status=status, lagging={task_id: 137 for task_id in dead},
                policy=draw(st.sampled_from(Policy)), state=draw(st.sampled_from(AgentState)),
                degraded_by_swarm=draw(st.booleans()))


def running(task_id="t1"):
    return TaskStatus(task_id, "running", "running")


class ReactionTests(SynchronousTestCase):
    def test_a_dead_task_degrades_a_ready_agent_with_swarms_reason(self):
        status = ServiceStatus("svc", 1, (TaskStatus("t1", "failed", "shutdown",
                                                     error="task: non-zero exit (137)"),))
        reaction = react(status=status, lagging={}, policy=Policy.ON_DEMAND,
                         state=AgentState.READY, degraded_by_swarm=False)
        self.assertEqual(reaction, Degrade("no task running (task: non-zero exit (137))"))

    def test_a_task_running_again_recovers_an_agent_degraded_by_swarm_only(self):
        status = ServiceStatus("svc", 1, (running(),))
        for by_swarm, expected in ((True, Recover()), (False, Stay())):
            self.assertEqual(react(status=status, lagging={}, policy=Policy.ALWAYS_ON,
                                   state=AgentState.DEGRADED, degraded_by_swarm=by_swarm),
                             expected)

    def test_scaled_to_zero_elsewhere_puts_a_ready_on_demand_agent_to_sleep(self):
        status = ServiceStatus("svc", 0)
        self.assertEqual(react(status=status, lagging={}, policy=Policy.ON_DEMAND,
                               state=AgentState.READY, degraded_by_swarm=False),
                         SleptElsewhere())

    def test_an_always_on_service_at_zero_is_degraded_not_ours_to_scale(self):
        reaction = react(status=ServiceStatus("svc", 0), lagging={}, policy=Policy.ALWAYS_ON,
                         state=AgentState.READY, degraded_by_swarm=False)
        self.assertIsInstance(reaction, Degrade)
        self.assertIn("the orchestrator never does", reaction.reason)

    def test_a_death_the_engine_reported_first_counts_before_swarm_shows_it(self):
        status = ServiceStatus("svc", 1, (running("t1"),))
        reaction = react(status=status, lagging={"t1": 137}, policy=Policy.ALWAYS_ON,
                         state=AgentState.READY, degraded_by_swarm=False)
        self.assertEqual(reaction.reason, "no task running (task t1 exited with code 137)")

    @given(situations())
    def test_an_always_on_agent_is_never_put_to_sleep(self, situation):
        situation["policy"] = Policy.ALWAYS_ON
        self.assertNotIsInstance(react(**situation), SleptElsewhere)

    @given(situations())
    def test_a_running_task_never_degrades(self, situation):
        if judge_service(situation["status"], situation["lagging"]) is SwarmVerdict.TASK_RUNS:
            self.assertNotIsInstance(react(**situation), Degrade)

    @given(situations())
    def test_an_on_demand_agent_asleep_or_waking_is_left_to_its_own_flows(self, situation):
        situation["policy"] = Policy.ON_DEMAND
        if situation["state"] in (AgentState.SLEEPING, AgentState.STARTING):
            self.assertEqual(react(**situation), Stay())

    @given(situations())
    def test_exhausted_restarts_are_claimed_only_when_swarm_has_given_up(self, situation):
        reaction = react(**situation)
        if isinstance(reaction, Degrade) and reaction.restarts_exhausted:
            self.assertTrue(situation["status"].restarts_exhausted)
            self.assertFalse(situation["status"].running_tasks
                             and not set(t.id for t in situation["status"].running_tasks)
                             <= set(situation["lagging"]))

    @given(situations())
    def test_recovery_is_only_for_agents_that_swarm_took_down_or_always_on_starting(
            self, situation):
        if isinstance(react(**situation), Recover):
            self.assertTrue(
                (situation["state"] is AgentState.DEGRADED and situation["degraded_by_swarm"])
                or (situation["state"] is AgentState.STARTING
                    and situation["policy"] is Policy.ALWAYS_ON))
