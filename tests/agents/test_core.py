"""
The agent's core: the one writer of its transitions, its waiters, and the one slot for
the flow in progress (which flow may run, which waits, which gives way).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.core import MOVING, AgentCore, Cause, FlowBase, FlowKind
from orchestrator.states import AgentState, InvalidTransition
from tests.helpers import RecordingBus, agent_config


def make_core() -> tuple[AgentCore, RecordingBus]:
    clock = Clock()
    bus = RecordingBus(clock)
    return AgentCore(agent_config(), bus=bus, clock=clock), bus


class Heard(FlowBase):
    def __init__(self) -> None:
        self.heard = []

    def transitioned(self, old, new):
        self.heard.append(("transitioned", old, new))

    def settled(self, state):
        self.heard.append(("settled", state))

    def probe_failed(self):
        self.heard.append(("probe_failed",))


class TransitionTests(SynchronousTestCase):
    def test_a_transition_emits_the_event_the_table_names_and_tells_every_flow(self):
        core, bus = make_core()
        heard = Heard()
        core.add_flow(heard)
        core.settle(AgentState.SLEEPING)
        core.transition(AgentState.STARTING, reason="request")
        self.assertEqual(bus.types(), ["agent.reconciled", "agent.wake"])
        self.assertEqual(bus.events[-1].fields,
                         {"previous": "sleeping", "state": "starting", "reason": "request"})
        self.assertEqual(heard.heard, [("settled", AgentState.SLEEPING),
                                       ("transitioned", AgentState.SLEEPING,
                                        AgentState.STARTING)])

    def test_a_move_to_the_same_state_does_nothing(self):
        core, bus = make_core()
        core.transition(AgentState.STARTING)
        self.assertEqual(bus.types(), [])

    def test_a_move_the_table_does_not_allow_is_refused_and_changes_nothing(self):
        core, bus = make_core()
        core.settle(AgentState.SLEEPING)
        self.assertRaises(InvalidTransition, core.transition, AgentState.READY)
        self.assertIs(core.state, AgentState.SLEEPING)
        self.assertEqual(bus.types(), ["agent.reconciled"])

    def test_degraded_again_takes_up_the_new_reason_without_a_second_event(self):
        core, bus = make_core()
        core.degrade("first", Cause.HEALTH)
        core.degrade("second", Cause.SWARM)
        self.assertEqual(bus.types(), ["agent.degraded"])
        self.assertEqual((core.reason, core.cause), ("second", Cause.SWARM))

    def test_leaving_degraded_forgets_the_reason_and_the_cause(self):
        core, _ = make_core()
        core.degrade("task died", Cause.SWARM)
        core.became_ready()
        self.assertEqual((core.state, core.reason, core.cause),
                         (AgentState.READY, None, None))

    def test_the_status_health_body_carries_phase_only_while_starting(self):
        core, _ = make_core()
        core.set_phase("probing")
        self.assertEqual(core.status().health_body(),
                         {"status": "starting", "agent": "alpha", "phase": "probing"})
        core.set_phase(None)
        core.degrade("no task running", Cause.SWARM)
        self.assertEqual(core.status().health_body(),
                         {"status": "degraded", "agent": "alpha", "reason": "no task running"})

    def test_the_public_body_gives_a_reason_of_its_cause_not_swarms_text(self):
        core, _ = make_core()
        for cause, public in [(Cause.SWARM, "the agent's service has no running task"),
                              (Cause.WAKE_FAILED, "a wake failed"),
                              (Cause.HEALTH, "the agent's health checks fail"),
                              (Cause.SCALE_DOWN, "a scale-down failed")]:
            core.degrade("No such image: registry.internal:5000/alpha:2", cause)
            status = core.status()
            self.assertEqual(status.public_body(),
                             {"status": "degraded", "agent": "alpha", "reason": public})
            self.assertEqual(status.health_body()["reason"],
                             "No such image: registry.internal:5000/alpha:2")

    def test_the_public_body_has_no_reason_when_not_degraded(self):
        core, _ = make_core()
        core.set_phase("probing")
        self.assertEqual(core.status().public_body(), core.status().health_body())


class WaiterTests(SynchronousTestCase):
    def test_waiters_are_released_when_the_agent_is_ready(self):
        core, _ = make_core()
        waiting = core.when_settled()
        self.assertNoResult(waiting)
        core.became_ready()
        self.assertIs(self.successResultOf(waiting), AgentState.READY)
        self.assertEqual(core.waiter_count, 0)

    def test_a_cancelled_waiter_is_forgotten(self):
        core, _ = make_core()
        waiting = core.when_settled()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(core.waiter_count, 0)

    def test_a_settled_agent_answers_at_once(self):
        core, _ = make_core()
        core.settle(AgentState.DEGRADED, reason="no service")
        self.assertIs(self.successResultOf(core.when_settled()), AgentState.DEGRADED)


class FlowSlotTests(SynchronousTestCase):
    def test_a_moving_flow_takes_a_free_slot_at_once(self):
        core, _ = make_core()
        flow = self.successResultOf(core.acquire(FlowKind.WAKING))
        self.assertTrue(flow.active)
        self.assertIs(core.flow, FlowKind.WAKING)

    def test_a_second_moving_flow_waits_until_the_first_ends(self):
        core, _ = make_core()
        scaling_down = self.successResultOf(core.acquire(FlowKind.SCALING_DOWN))
        waking = core.acquire(FlowKind.WAKING)
        self.assertNoResult(waking)
        self.assertTrue(core.moving)
        core.end(scaling_down)
        self.assertTrue(self.successResultOf(waking).active)
        self.assertIs(core.flow, FlowKind.WAKING)

    def test_an_observing_flow_is_refused_while_a_moving_one_holds_or_waits(self):
        core, _ = make_core()
        draining = self.successResultOf(core.acquire(FlowKind.DRAINING))
        self.assertIsNone(core.try_begin(FlowKind.RECHECKING))
        core.acquire(FlowKind.WAKING)
        core.end(draining)
        self.assertIsNone(core.try_begin(FlowKind.RECOVERING))

    def test_an_observing_flow_gives_way_to_a_moving_one(self):
        core, _ = make_core()
        rechecking = core.try_begin(FlowKind.RECHECKING)
        waking = self.successResultOf(core.acquire(FlowKind.WAKING))
        self.assertFalse(rechecking.active)
        self.assertTrue(waking.active)
        core.end(rechecking)  # late, and harmless
        self.assertIs(core.flow, FlowKind.WAKING)

    def test_a_recheck_takes_over_from_a_recovery_but_not_from_another_recheck(self):
        core, _ = make_core()
        recovering = core.try_begin(FlowKind.RECOVERING)
        rechecking = core.try_begin(FlowKind.RECHECKING)
        self.assertFalse(recovering.active)
        self.assertIsNone(core.try_begin(FlowKind.RECHECKING))
        self.assertTrue(rechecking.active)

    def test_a_drain_that_ends_in_a_scale_down_keeps_the_slot(self):
        core, _ = make_core()
        flow = self.successResultOf(core.acquire(FlowKind.DRAINING))
        flow.become(FlowKind.SCALING_DOWN)
        self.assertIs(core.flow, FlowKind.SCALING_DOWN)
        self.assertTrue(flow.active)

    def test_stop_ends_every_flow_and_cancels_the_waiting_ones(self):
        core, _ = make_core()
        flow = self.successResultOf(core.acquire(FlowKind.SCALING_DOWN))
        waiting = core.acquire(FlowKind.WAKING)
        core.stop()
        self.assertFalse(flow.active)
        self.failureResultOf(waiting, CancelledError)
        self.assertIsNone(core.try_begin(FlowKind.RECHECKING))

    def test_the_kinds_are_checked(self):
        core, _ = make_core()
        self.assertRaises(ValueError, core.try_begin, FlowKind.WAKING)
        self.assertRaises(ValueError, core.acquire, FlowKind.RECHECKING)

    @given(st.lists(st.tuples(st.sampled_from(["begin", "end"]), st.sampled_from(FlowKind)),
                    max_size=40))
    def test_at_most_one_flow_acts_and_moving_flows_are_served_in_order(self, steps):
        core, _ = make_core()
        granted = []  # the flows that got the slot, in that order
        asked = []  # moving kinds, in the order they asked
        ended = []
        for action, kind in steps:
            if action == "begin" and kind in MOVING:
                asked.append(kind)
                core.acquire(kind).addCallback(granted.append)
            elif action == "begin":
                flow = core.try_begin(kind)
                if flow is not None:
                    granted.append(flow)
            else:
                for flow in [f for f in granted if f.active][:1]:
                    ended.append(flow)
                    core.end(flow)
            self.assertLessEqual(len([flow for flow in granted if flow.active]), 1)
            moving = [flow for flow in granted if flow.kind in MOVING]
            self.assertEqual([flow.kind for flow in moving], asked[:len(moving)])
            # A moving flow is never preempted: it stops acting only when it ends.
            for flow in moving:
                self.assertTrue(flow.active or flow in ended)
