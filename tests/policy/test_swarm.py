"""
What an agent does about what Swarm shows of its service: the pure reactions.
"""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Policy
from orchestrator.policy.swarm import (
    Degrade,
    Recover,
    Shortage,
    SleptElsewhere,
    Stay,
    SwarmVerdict,
    judge_service,
    react,
    replicas_short,
)
from orchestrator.states import AgentState
from orchestrator.swarm.values import NodeStatus, ServiceStatus, TaskStatus

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


def task(task_id, state="running", desired="running", node="n1", error=""):
    return TaskStatus(task_id, state, desired, error=error, node_id=node)


NODES = {"n1": NodeStatus("n1", "worker1"), "n2": NodeStatus("n2", "worker2"),
         "n3": NodeStatus("n3", "worker3", availability="drain"),
         "n4": NodeStatus("n4", "worker4", state="down", message="heartbeat failure")}


@st.composite
def replicated(draw):
    """
    A service of up to four tasks on the nodes above, an agent asking for 1 to 3 of them.
    """
    tasks = tuple(
        task(f"t{index}", draw(st.sampled_from(TASK_STATES)), draw(st.sampled_from(DESIRED)),
             node=draw(st.sampled_from(["", *NODES])),
             error=draw(st.sampled_from(["", "no suitable node"])))
        for index in range(draw(st.integers(0, 4))))
    status = ServiceStatus("svc", draw(st.sampled_from([0, 1, 2, 3])), tasks)
    ids = [t.id for t in tasks] or ["t9"]
    return dict(status=status, wanted=draw(st.integers(1, 3)),
                lagging={task_id: 137 for task_id in draw(st.lists(st.sampled_from(ids),
                                                                    max_size=1))},
                lost=frozenset(draw(st.lists(st.sampled_from(ids), max_size=2))),
                nodes=NODES)


class ReplicaTests(SynchronousTestCase):
    """
    An agent that asks for several replicas: degraded while fewer run, saying how many.
    """

    def test_a_lost_replica_of_two_degrades_saying_how_many_run(self):
        status = ServiceStatus("svc", 2, (task("t1"), task("t2", "failed", "shutdown",
                                                           error="task: non-zero exit (137)"),
                                          task("t3", "pending", node="n2")))
        shortage = replicas_short(status, 2, {}, lost={"t1", "t2"}, nodes=NODES)
        self.assertEqual(shortage, Shortage(1, 2, "1 of 2 replicas running "
                                                  "(task: non-zero exit (137)); "
                                                  "Swarm is replacing it"))

    def test_replicas_still_starting_after_a_wake_are_not_missing(self):
        status = ServiceStatus("svc", 2, (task("t1"), task("t2", "starting", node="n2")))
        self.assertIsNone(replicas_short(status, 2, {}, lost=set(), nodes=NODES))

    def test_a_replica_swarm_cannot_place_is_missing(self):
        status = ServiceStatus("svc", 2, (task("t1"), task("t2", "pending", node="",
                                                           error="no suitable node")))
        shortage = replicas_short(status, 2, {}, lost=set(), nodes=NODES)
        self.assertEqual(shortage.reason, "1 of 2 replicas running (no suitable node); "
                                          "Swarm is replacing it")

    def test_the_node_a_task_left_is_named(self):
        status = ServiceStatus("svc", 2, (task("t1", node="n1"),
                                          task("t2", "shutdown", "shutdown", node="n3")))
        shortage = replicas_short(status, 2, {}, lost={"t1", "t2"}, nodes=NODES)
        self.assertEqual(shortage.reason,
                         "1 of 2 replicas running (task t2 left node worker3 is drained)")

    def test_a_node_down_is_named_when_its_task_was_the_only_one(self):
        status = ServiceStatus("svc", 1, (task("t1", "running", "shutdown", node="n4"),
                                          task("t2", "pending", node="n1")))
        reaction = react(status=status, lagging={}, policy=Policy.ALWAYS_ON,
                         state=AgentState.READY, degraded_by_swarm=False, nodes=NODES)
        self.assertEqual(reaction, Degrade(
            "no task running (task t1 left node worker4 is down: heartbeat failure); "
            "Swarm is restarting it"))

    def test_a_ready_agent_short_of_replicas_is_degraded_and_recovers_when_all_run(self):
        short = ServiceStatus("svc", 2, (task("t1"), task("t2", "failed", "shutdown")))
        reaction = react(status=short, lagging={}, policy=Policy.ON_DEMAND,
                         state=AgentState.READY, degraded_by_swarm=False, wanted=2,
                         lost={"t1", "t2"})
        self.assertEqual(reaction, Degrade("1 of 2 replicas running (task failed)",
                                           short=True))
        whole = attrs.evolve(short, tasks=(*short.tasks, task("t3")))
        self.assertEqual(react(status=whole, lagging={}, policy=Policy.ON_DEMAND,
                               state=AgentState.DEGRADED, degraded_by_swarm=True, wanted=2,
                               lost={"t1", "t2"}), Recover())

    @given(replicated())
    def test_never_short_with_as_many_running_as_wanted(self, case):
        running = [t for t in case["status"].running_tasks if t.id not in case["lagging"]]
        if len(running) >= case["wanted"] or case["status"].replicas == 0:
            self.assertIsNone(replicas_short(**case))

    @given(replicated())
    def test_a_shortage_says_how_many_of_how_many_run(self, case):
        shortage = replicas_short(**case)
        if shortage is not None:
            self.assertLess(shortage.running, shortage.wanted)
            self.assertTrue(shortage.reason.startswith(
                f"{shortage.running} of {shortage.wanted} replicas running ("))

    @given(replicated())
    def test_without_a_loss_or_an_unplaceable_task_nothing_is_short(self, case):
        if not case["lost"] and not case["lagging"] and not any(
                t.live and not t.running and t.error for t in case["status"].tasks):
            self.assertIsNone(replicas_short(**case))

    @given(replicated(), st.sampled_from(AgentState), st.booleans(), st.sampled_from(Policy))
    def test_a_short_agent_is_degraded_only_if_it_was_awake(self, case, state, by_swarm,
                                                            policy):
        reaction = react(state=state, degraded_by_swarm=by_swarm, policy=policy, **case)
        if isinstance(reaction, Degrade) and replicas_short(**case) is not None and (
                judge_service(case["status"], case["lagging"]) is SwarmVerdict.TASK_RUNS):
            self.assertTrue(state is AgentState.READY
                            or (state is AgentState.DEGRADED and by_swarm))
