"""
The one slot for an agent's flow in progress: which flow may act, which waits, which
gives way.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.slot import MOVING, FlowKind, FlowSlot


class FlowSlotTests(SynchronousTestCase):
    def test_a_moving_flow_takes_a_free_slot_at_once(self):
        slot = FlowSlot()
        flow = self.successResultOf(slot.acquire(FlowKind.WAKING))
        self.assertTrue(flow.active)
        self.assertIs(slot.flow, FlowKind.WAKING)

    def test_a_second_moving_flow_waits_until_the_first_ends(self):
        slot = FlowSlot()
        scaling_down = self.successResultOf(slot.acquire(FlowKind.SCALING_DOWN))
        waking = slot.acquire(FlowKind.WAKING)
        self.assertNoResult(waking)
        self.assertTrue(slot.moving)
        slot.end(scaling_down)
        self.assertTrue(self.successResultOf(waking).active)
        self.assertIs(slot.flow, FlowKind.WAKING)

    def test_an_observing_flow_is_refused_while_a_moving_one_holds_or_waits(self):
        slot = FlowSlot()
        draining = self.successResultOf(slot.acquire(FlowKind.DRAINING))
        self.assertIsNone(slot.try_begin(FlowKind.RECHECKING))
        slot.acquire(FlowKind.WAKING)
        slot.end(draining)
        self.assertIsNone(slot.try_begin(FlowKind.RECOVERING))

    def test_an_observing_flow_gives_way_to_a_moving_one(self):
        slot = FlowSlot()
        rechecking = slot.try_begin(FlowKind.RECHECKING)
        waking = self.successResultOf(slot.acquire(FlowKind.WAKING))
        self.assertFalse(rechecking.active)
        self.assertTrue(waking.active)
        slot.end(rechecking)  # late, and harmless
        self.assertIs(slot.flow, FlowKind.WAKING)

    def test_a_recheck_takes_over_from_a_recovery_but_not_from_another_recheck(self):
        slot = FlowSlot()
        recovering = slot.try_begin(FlowKind.RECOVERING)
        rechecking = slot.try_begin(FlowKind.RECHECKING)
        self.assertFalse(recovering.active)
        self.assertIsNone(slot.try_begin(FlowKind.RECHECKING))
        self.assertTrue(rechecking.active)

    def test_a_drain_that_ends_in_a_scale_down_keeps_the_slot(self):
        slot = FlowSlot()
        flow = self.successResultOf(slot.acquire(FlowKind.DRAINING))
        flow.become(FlowKind.SCALING_DOWN)
        self.assertIs(slot.flow, FlowKind.SCALING_DOWN)
        self.assertTrue(flow.active)

    def test_stop_ends_every_flow_and_cancels_the_waiting_ones(self):
        slot = FlowSlot()
        flow = self.successResultOf(slot.acquire(FlowKind.SCALING_DOWN))
        waiting = slot.acquire(FlowKind.WAKING)
        slot.stop()
        self.assertFalse(flow.active)
        self.failureResultOf(waiting, CancelledError)
        self.assertIsNone(slot.try_begin(FlowKind.RECHECKING))

    def test_the_kinds_are_checked(self):
        slot = FlowSlot()
        self.assertRaises(ValueError, slot.try_begin, FlowKind.WAKING)
        self.assertRaises(ValueError, slot.acquire, FlowKind.RECHECKING)

    @given(st.lists(st.tuples(st.sampled_from(["begin", "end"]), st.sampled_from(FlowKind)),
                    max_size=40))
    def test_at_most_one_flow_acts_and_moving_flows_are_served_in_order(self, steps):
        slot = FlowSlot()
        granted = []  # the flows that got the slot, in that order
        asked = []  # moving kinds, in the order they asked
        ended = []
        for action, kind in steps:
            if action == "begin" and kind in MOVING:
                asked.append(kind)
                slot.acquire(kind).addCallback(granted.append)
            elif action == "begin":
                flow = slot.try_begin(kind)
                if flow is not None:
                    granted.append(flow)
            else:
                for flow in [f for f in granted if f.active][:1]:
                    ended.append(flow)
                    slot.end(flow)
            self.assertLessEqual(len([flow for flow in granted if flow.active]), 1)
            moving = [flow for flow in granted if flow.kind in MOVING]
            self.assertEqual([flow.kind for flow in moving], asked[:len(moving)])
            # A moving flow is never preempted: it stops acting only when it ends.
            for flow in moving:
                self.assertTrue(flow.active or flow in ended)
