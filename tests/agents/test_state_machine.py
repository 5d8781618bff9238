"""
The state machine over random sequences of requests, task runs and failures, probe
results, time, idleness and engine events: the safety net under the agent's flows.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.runtime import Agent
from orchestrator.config.model import Policy
from orchestrator.states import TRANSITIONS, AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.agents.world import make_world


class AgentStateMachine(RuleBasedStateMachine):
    """
    Random sequences of requests, task runs and failures, probe results, time, idleness
    and engine events, driving a real agent (and the watcher) against the fake Swarm.
    Whatever happens: the state is always one of the four, every change of state comes
    with exactly one event naming an allowed transition, an always-on agent is never
    scaled, and nothing logs an error.
    """

    @initialize(policy=st.sampled_from(Policy), max_attempts=st.sampled_from([0, 2]))
    def start(self, policy, max_attempts):
        self.errors = []
        globalLogPublisher.addObserver(self._observe)
        self.policy = policy
        replicas = 1 if policy is Policy.ALWAYS_ON else 0
        self.world = make_world(("alpha", {"policy": policy, "replicas": replicas,
                                           "max_attempts": max_attempts}),
                                swarm=FakeSwarm(auto_run=False))
        self.checked_events = 0
        self.expected_state = self.world.agent().state

    def _observe(self, event):
        if event.get("isError"):
            self.errors.append(event)

    def teardown(self):
        globalLogPublisher.removeObserver(self._observe)
        if hasattr(self, "world"):
            self.world.watcher.stopService()
            self.world.agent().stop()

    @property
    def agent(self) -> Agent:
        return self.world.agent()

    @rule(ignored=st.booleans())
    def request(self, ignored):
        self.agent.admit(ignored)

    @rule()
    def activity(self):
        self.agent.request_started()
        self.agent.request_finished()

    @rule()
    def tasks_run(self):
        self.world.swarm.run_tasks("alpha")

    @rule()
    def tasks_fail_to_start(self):
        self.world.swarm.fail_tasks("alpha", "No such image: agent:1")

    @rule()
    def tasks_die(self):
        self.world.swarm.kill_tasks("alpha")

    @rule()
    def command_breaks(self):
        self.world.swarm.force_update("alpha", exits_at_once=True)

    @rule()
    def command_fixed(self):
        self.world.swarm.force_update("alpha", exits_at_once=False)

    @rule(healthy=st.booleans())
    def probes(self, healthy):
        self.world.prober.healthy = healthy

    @rule(seconds=st.sampled_from([0, 0.05, 0.25, 1, 10, 30, 60, 900]))
    def time_passes(self, seconds):
        self.world.clock.advance(seconds)

    @rule()
    def engine_goes_away(self):
        self.world.swarm.available = False
        self.world.swarm.end_event_streams()

    @rule()
    def engine_comes_back(self):
        self.world.swarm.available = True

    @invariant()
    def state_is_valid_and_each_change_has_one_event(self):
        if not hasattr(self, "world"):
            return
        events = [e for e in self.world.bus.events if e.agent == "alpha"]
        for event in events[self.checked_events:]:
            if event.type == "agent.reconciled":
                self.expected_state = AgentState(event.fields["state"])
            elif "previous" in event.fields:
                old = AgentState(event.fields["previous"])
                new = AgentState(event.fields["state"])
                assert old is self.expected_state, (event, self.expected_state)
                assert TRANSITIONS[(old, new)] == event.type, event
                self.expected_state = new
        self.checked_events = len(events)
        assert isinstance(self.agent.state, AgentState)
        assert self.agent.state is self.expected_state, (self.agent.state, events[-3:])

    @invariant()
    def always_on_is_never_scaled(self):
        if hasattr(self, "world") and self.policy is Policy.ALWAYS_ON:
            assert self.world.swarm.scale_calls == [], self.world.swarm.scale_calls

    @invariant()
    def nothing_logs_an_error(self):
        if hasattr(self, "world"):
            assert not self.errors, self.errors


class AgentStateMachineTests(SynchronousTestCase):
    def test_random_sequences_keep_to_the_state_table(self):
        run_state_machine_as_test(AgentStateMachine)
