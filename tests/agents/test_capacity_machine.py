"""
The host's budget over random sequences of requests, frames, leases, tasks that run or
not, probes, orders to sleep and time: the safety net under the evictions.
"""

from __future__ import annotations

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.capacity import Capacity
from orchestrator.agents.leases import AgentAsleep
from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.config.model import LimitsConfig, Policy
from orchestrator.policy.admission import Admission
from orchestrator.policy.capacity import MiB
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import RecordingBus, ScriptedProber, agent_config

NAMES = ("a", "b", "c", "d", "e")
COSTS = {"a": 256 * MiB, "b": 256 * MiB, "c": 512 * MiB, "d": 128 * MiB, "e": 128 * MiB}
LIMITS = LimitsConfig(max_awake=3, memory=1024 * MiB, min_idle=30, min_awake=60,
                      queue_timeout=120)


class ProtectionChecked(RecordingBus):
    """
    A bus that checks, as each eviction is announced, that the agent evicted may be.
    """

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.now = clock.seconds
        self.agents: AgentRegistry | None = None
        self.violations: list[str] = []

    def publish(self, event) -> None:
        if event.type == "agent.evicted" and self.agents is not None:
            agent = self.agents[event.agent]
            now = self.now()
            problems = [
                agent.config.policy is Policy.ALWAYS_ON and "always-on",
                agent.in_flight > 0 and "a request in flight",
                agent.last_frame is not None and now - agent.last_frame < LIMITS.min_idle
                and "a recent frame",
                len(agent.leases.leases) > 0 and "a lease",
                agent.state is AgentState.STARTING and "starting",
            ]
            self.violations += [f"{event.agent} evicted with {problem}"
                                for problem in problems if problem]
        super().publish(event)


class CapacityStateMachine(RuleBasedStateMachine):
    """
    Five agents (one always-on, maybe) of different costs under a budget for fewer.
    Whatever happens: the services Swarm is asked to run keep within the budget at
    every moment, no protected agent is evicted, and nothing logs an error.
    """

    @initialize(always_on=st.booleans(), auto_run=st.booleans(),
                min_awake=st.sampled_from([0, 60]))
    def start(self, always_on, auto_run, min_awake):
        self.errors = []
        globalLogPublisher.addObserver(self._observe)
        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        # Tasks that run as soon as they are scheduled, or only when a rule says so.
        self.swarm = FakeSwarm(auto_run=auto_run)
        self.bus = ProtectionChecked(self.clock)
        self.prober = ScriptedProber()
        limits = attrs.evolve(LIMITS, min_awake=min_awake)
        self.capacity = Capacity(limits, clock=self.clock, bus=self.bus, swarm=self.swarm)
        self.capacity.startService()
        self.agents = AgentRegistry(
            lambda config: Agent(config, swarm=self.swarm, prober=self.prober, bus=self.bus,
                                 reactor=self.clock, capacity=self.capacity),
            bus=self.bus, capacity=self.capacity)
        self.bus.agents = self.agents
        configs = []
        for name in NAMES:
            policy = Policy.ALWAYS_ON if always_on and name == "e" else Policy.ON_DEMAND
            self.swarm.add_service(name, replicas=1 if policy is Policy.ALWAYS_ON else 0,
                                   memory_reservation=COSTS[name])
            configs.append(agent_config(name, policy=policy))
        for agent in self.agents.load(configs):
            agent.start()
        self.open: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.moments = 0

    def _observe(self, event):
        if event.get("isError"):
            self.errors.append(event)

    def teardown(self):
        globalLogPublisher.removeObserver(self._observe)
        if hasattr(self, "agents"):
            self.agents.stop()
            self.capacity.stopService()

    # What happens -----------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES))
    def request(self, name):
        agent = self.agents[name]
        if agent.admit(ignored=False) is Admission.FORWARD:
            agent.request_started()
            self.open[name] += 1

    @rule(name=st.sampled_from(NAMES))
    def quick_request(self, name):
        agent = self.agents[name]
        if agent.admit(ignored=False) is Admission.FORWARD:
            agent.request_started()
            agent.request_finished()

    @precondition(lambda self: any(self.open.values()))
    @rule(data=st.data())
    def request_ends(self, data):
        name = data.draw(st.sampled_from([name for name, n in self.open.items() if n]))
        self.open[name] -= 1
        self.agents[name].request_finished()

    @rule(name=st.sampled_from(NAMES))
    def frame(self, name):
        if self.agents[name].admission(ignored=True) is Admission.FORWARD:
            self.agents[name].frame_relayed()

    @rule(name=st.sampled_from(NAMES), seconds=st.sampled_from([30, 600]))
    def lease(self, name, seconds):
        try:
            self.agents[name].leases.acquire(seconds=seconds, reason="work")
        except AgentAsleep:
            pass

    @rule(name=st.sampled_from(NAMES))
    def lease_released(self, name):
        leases = self.agents[name].leases
        for lease in list(leases.leases):
            leases.release(lease.id)

    @rule(name=st.sampled_from(NAMES))
    def tasks_run(self, name):
        self.swarm.run_tasks(name)

    @rule(name=st.sampled_from(NAMES))
    def tasks_fail_to_start(self, name):
        self.swarm.fail_tasks(name, "No such image: agent:1")

    @rule(healthy=st.booleans())
    def probes(self, healthy):
        self.prober.healthy = healthy

    @rule(name=st.sampled_from(NAMES[:4]))
    def ordered_to_sleep(self, name):
        self.agents[name].sleep(reason="operator")

    @rule(seconds=st.sampled_from([0.05, 1, 10, 30, 60, 120, 900]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)

    # What always holds ------------------------------------------------------------------

    @invariant()
    def swarm_runs_within_the_budget(self):
        if not hasattr(self, "swarm"):
            return
        wanted = [name for name, status in self.swarm.statuses().result.items()
                  if status.replicas]
        assert len(wanted) <= LIMITS.max_awake, wanted
        assert sum(COSTS[name] for name in wanted) <= LIMITS.memory, wanted

    @invariant()
    def no_protected_agent_is_evicted(self):
        if hasattr(self, "bus"):
            assert not self.bus.violations, self.bus.violations

    @invariant()
    def the_books_agree_with_swarm(self):
        if not hasattr(self, "swarm"):
            return
        wanted = {name for name, status in self.swarm.statuses().result.items()
                  if status.replicas}
        holding = {o.name for o in self.capacity.occupants() if o.awake}
        assert wanted <= holding, (wanted, holding)

    @invariant()
    def nothing_logs_an_error(self):
        if hasattr(self, "errors"):
            assert not self.errors, self.errors


class CapacityStateMachineTests(SynchronousTestCase):
    def test_random_sequences_keep_the_budget_and_the_protections(self):
        run_state_machine_as_test(CapacityStateMachine,
                                  settings=settings(max_examples=150, stateful_step_count=60))
