"""
The agent's core: the one writer of its transitions, and its waiters (its flow slot is
tests/agents/test_slot.py).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.core import AgentCore, Cause, FlowBase
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
