"""
The host's budget at run time: wakes admitted, evictions through the agents' own sleep,
the wakes that wait for room (and what their clients are told), refusals, the node's
memory, and the books the admin API reads.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.capacity import EVICTION_COOLDOWN, QUEUE_RECHECK, Capacity
from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.config.model import Backend, LimitsConfig, NodeShare, Policy
from orchestrator.policy.capacity import MiB
from orchestrator.states import AgentState
from orchestrator.status import CapacityStatus, WaitingWake
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import DrainableConnection, RecordingBus, ScriptedProber, agent_config

#: Agents awake for a minute may be evicted; a frame within 30 s makes one busy.
LIMITS = LimitsConfig(max_awake=2, min_awake=60, min_idle=30, queue_timeout=120)


class BudgetKeepingSwarm(FakeSwarm):
    """
    A fake Swarm that records, after every scale call it accepts, the services that
    want a replica: the budget must hold in every one of those moments.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.moments: list[frozenset[str]] = []

    def scale(self, service, replicas):
        result = super().scale(service, replicas)
        self.moments.append(frozenset(name for name, found in self._services.items()
                                      if found.replicas))
        return result

    def reservation(self, names) -> int:
        return sum(self._services[name].memory_reservation for name in names)


class LingeringSwarm(BudgetKeepingSwarm):
    """
    A fake Swarm in which the task of a service scaled to 0 keeps running until the
    test says it stopped, as a real container does through its stop grace period.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lingering: set[str] = set()

    def scale(self, service, replicas):
        if replicas == 0:
            self.lingering.add(service)
        return super().scale(service, replicas)

    def status(self, service):
        result = super().status(service)
        if service in self.lingering:
            status = result.result
            stopping = [attrs.evolve(task, state="running") for task in status.tasks[-1:]]
            return succeed(attrs.evolve(status, tasks=status.tasks[:-1] + tuple(stopping)))
        return result


@attrs.define
class Host:
    """
    Agents sharing one budget, one fake Swarm, one clock and one bus.
    """

    swarm: BudgetKeepingSwarm
    clock: MemoryReactorClock
    bus: RecordingBus
    capacity: Capacity
    agents: AgentRegistry

    def __getitem__(self, name: str) -> Agent:
        return self.agents[name]

    def wake(self, name: str) -> None:
        self.agents[name].wake(reason="request")

    def wake_and_age(self, *names: str, seconds: float = 120) -> None:
        """
        Wake C{names} in turn, a second apart, then let C{seconds} pass (so none is
        protected by having just woken).
        """
        for name in names:
            self.wake(name)
            self.clock.advance(1)
        self.clock.advance(seconds)

    def state(self, name: str) -> AgentState:
        return self.agents[name].state

    def evicted(self) -> list[tuple[str, str | None]]:
        return [(event.agent, event.fields["for_agent"]) for event in self.bus.events
                if event.type == "agent.evicted"]

    def events(self, event_type: str) -> list:
        return [event for event in self.bus.events if event.type == event_type]


def make_host(*agents: str | tuple[str, dict], limits: LimitsConfig = LIMITS,
              swarm: FakeSwarm | None = None, available=lambda: None) -> Host:
    """
    On-demand agents (a name, or a name and changes to its configuration; C{replicas}
    and C{memory_reservation} go to its service), asleep unless told otherwise.
    """
    clock = MemoryReactorClock()
    clock.advance(1000)
    swarm = swarm if swarm is not None else BudgetKeepingSwarm()
    bus = RecordingBus(clock)
    prober = ScriptedProber()
    capacity = Capacity(limits, clock=clock, bus=bus, swarm=swarm, available=available)
    capacity.startService()
    registry = AgentRegistry(lambda config: Agent(config, swarm=swarm, prober=prober, bus=bus,
                                                  reactor=clock, capacity=capacity),
                             bus=bus, capacity=capacity)
    configs = []
    for item in agents:
        name, changes = (item, {}) if isinstance(item, str) else item
        changes = dict(changes)
        service = {key: changes.pop(key) for key in ("replicas", "memory_reservation")
                   if key in changes}
        service.setdefault("replicas", 0)
        configs.append(agent_config(name, **changes))
        swarm.add_service(name, **service)
    for agent in registry.load(configs):
        agent.start()
    return Host(swarm, clock, bus, capacity, registry)


class AdmissionTests(SynchronousTestCase):
    def test_a_wake_that_fits_scales_up_at_once(self):
        host = make_host("a", "b")
        host.wake_and_age("a")
        host.wake("b")
        self.assertEqual((host.state("a"), host.state("b")), (AgentState.READY,) * 2)
        self.assertEqual(host.evicted(), [])

    def test_without_a_budget_wakes_are_never_held_back(self):
        host = make_host(*"abcdefgh", limits=LimitsConfig())
        for name in "abcdefgh":
            host.wake(name)
        self.assertTrue(all(host.state(name) is AgentState.READY for name in "abcdefgh"))
        self.assertEqual(host.capacity.snapshot().awake, 8)

    def test_an_agent_found_awake_at_start_holds_room(self):
        host = make_host(("a", {"replicas": 1}), "b", "c")
        host.wake_and_age("b")
        host.wake("c")
        self.assertEqual(host.evicted(), [("a", "c")])


class EvictionTests(SynchronousTestCase):
    def test_a_wake_over_the_budget_first_evicts_the_least_recently_used(self):
        host = make_host("a", "b", "c")
        host.wake_and_age("a", "b")
        host["a"].touch()
        host.wake("c")
        self.assertEqual(host.evicted(), [("b", "c")])
        self.assertEqual([host.state(name) for name in "abc"],
                         [AgentState.READY, AgentState.SLEEPING, AgentState.READY])
        [sleep] = [e for e in host.events("agent.sleep") if e.agent == "b"]
        self.assertEqual(sleep.fields["reason"], "evicted")

    def test_the_evicted_agent_is_scaled_down_before_the_woken_one_is_scaled_up(self):
        host = make_host("a", "b", "c")
        host.wake_and_age("a", "b")
        host.wake("c")
        self.assertEqual(host.swarm.scale_calls[-2:], [("a", 0), ("c", 1)])
        self.assertTrue(all(len(moment) <= 2 for moment in host.swarm.moments))

    def test_the_woken_agent_scales_up_once_the_evicted_task_has_stopped(self):
        swarm = LingeringSwarm()
        host = make_host("a", "b", swarm=swarm, limits=attrs.evolve(LIMITS, max_awake=1))
        host.wake_and_age("a")
        host.wake("b")
        self.assertEqual(host.swarm.scale_calls[-1], ("a", 0))
        host.clock.advance(5)
        self.assertIs(host.state("b"), AgentState.STARTING)  # a's container still runs
        self.assertEqual(host["b"].status().phase, "evicting")
        swarm.lingering.clear()
        host.clock.advance(0.5)
        self.assertEqual(host.swarm.scale_calls[-1], ("b", 1))
        self.assertIs(host.state("b"), AgentState.READY)

    def test_the_eviction_event_says_for_whom_and_what_it_freed(self):
        host = make_host(("a", {"memory_reservation": 300 * MiB}), "b",
                         limits=attrs.evolve(LIMITS, max_awake=1))
        host.wake_and_age("a")
        host.wake("b")
        [event] = host.events("agent.evicted")
        self.assertEqual((event.agent, event.fields["for_agent"], event.fields["freed"]),
                         ("a", "b", 300 * MiB))
        self.assertEqual(event.fields["idle_seconds"], 121)

    def test_costs_are_the_services_memory_reservations(self):
        host = make_host(*((name, {"memory_reservation": 512 * MiB}) for name in "abc"),
                         limits=LimitsConfig(memory=1024 * MiB, min_awake=60))
        host.wake_and_age("a", "b")
        host.wake("c")
        self.assertEqual(host.evicted(), [("a", "c")])
        for moment in host.swarm.moments:
            self.assertLessEqual(host.swarm.reservation(moment), 1024 * MiB)

    def test_a_big_agent_evicts_as_many_small_ones_as_it_takes(self):
        host = make_host(*((name, {"memory_reservation": 256 * MiB}) for name in "abc"),
                         ("big", {"memory_reservation": 768 * MiB}),
                         limits=LimitsConfig(memory=1024 * MiB, min_awake=60))
        host.wake_and_age("a", "b", "c")
        host.wake("big")
        self.assertEqual(host.evicted(), [("a", "big"), ("b", "big")])
        self.assertIs(host.state("big"), AgentState.READY)

    def test_an_agent_without_a_reservation_costs_its_configured_memory(self):
        host = make_host(("a", {"memory": 900 * MiB}), "b",
                         limits=LimitsConfig(memory=1024 * MiB, min_awake=60))
        host.wake_and_age("a")
        host.wake("b")  # the default 256 MiB does not fit beside 900 MiB
        self.assertEqual(host.evicted(), [("a", "b")])

    def test_websockets_of_an_evicted_agent_are_asked_to_go_away(self):
        host = make_host("a", "b", limits=attrs.evolve(LIMITS, max_awake=1))
        host.wake_and_age("a")
        socket = DrainableConnection(host["a"].connections)
        host.wake("b")
        self.assertTrue(socket.asked)
        self.assertIs(host.state("b"), AgentState.STARTING)  # the drain waits for it
        socket.close()
        self.assertEqual((host.state("a"), host.state("b")),
                         (AgentState.SLEEPING, AgentState.READY))

    def test_the_routes_an_evicted_agent_registered_end_as_with_any_sleep(self):
        host = make_host(("a", {"hosts": ("*.a.example.com",)}), "b",
                         limits=attrs.evolve(LIMITS, max_awake=1))
        host.wake_and_age("a")
        host.agents.register("a", "x.a.example.com", Backend("http", "tasks.a", 9000),
                             host.clock.seconds())
        host.wake("b")
        self.assertEqual(host.agents.registered(), ())
        self.assertEqual(host.events("route.removed")[0].fields["reason"], "the agent slept")


class ProtectionTests(SynchronousTestCase):
    """
    Who is never evicted: the busy, the leased, the starting, the just woken, and
    always-on agents.
    """

    def test_an_agent_with_a_request_in_flight_is_passed_over(self):
        host = make_host("a", "b", "c")
        host.wake_and_age("a", "b")
        host["a"].request_started()
        host.wake("c")
        self.assertEqual(host.evicted(), [("b", "c")])

    def test_an_agent_relaying_frames_is_passed_over(self):
        host = make_host("a", "b", "c")
        host.wake_and_age("a", "b")
        host["a"].frame_relayed()
        host.clock.advance(29)
        host["b"].touch()
        host.wake("c")
        self.assertEqual(host.evicted(), [("b", "c")])

    def test_frames_older_than_min_idle_protect_no_more(self):
        host = make_host("a", "b", "c")
        host.wake_and_age("a", "b")
        host["a"].frame_relayed()
        host.clock.advance(30)
        host["b"].touch()
        host.wake("c")
        self.assertEqual(host.evicted(), [("a", "c")])

    def test_a_leased_agent_is_passed_over(self):
        host = make_host("a", "b", "c")
        host.wake_and_age("a", "b")
        host["a"].leases.acquire(seconds=600, reason="a long tool call")
        host["b"].touch()
        host.wake("c")
        self.assertEqual(host.evicted(), [("b", "c")])
        self.assertEqual(len(host["a"].leases.leases), 1)

    def test_always_on_agents_are_never_evicted(self):
        host = make_host(("a", {"policy": Policy.ALWAYS_ON, "replicas": 1}), "b", "c")
        host.wake_and_age("b")
        host["b"].touch()
        host.wake("c")
        self.assertEqual(host.evicted(), [("b", "c")])
        self.assertIs(host.state("a"), AgentState.READY)

    def test_an_agent_awake_for_less_than_min_awake_is_not_evicted(self):
        host = make_host("a", "b", "c")
        host.wake("a")
        host.wake("b")
        host.clock.advance(59)
        host.wake("c")
        self.assertEqual(host.evicted(), [])
        self.assertIs(host.state("c"), AgentState.STARTING)

    def test_a_wake_that_waits_goes_on_when_min_awake_has_passed(self):
        host = make_host("a", "b", "c")
        host.wake("a")
        host.clock.advance(10)
        host.wake("b")
        host.clock.advance(20)
        host.wake("c")
        host.clock.advance(30)  # a has been awake for 60 s now
        self.assertEqual(host.evicted(), [("a", "c")])
        self.assertIs(host.state("c"), AgentState.READY)


class WaitingTests(SynchronousTestCase):
    """
    When nobody may be evicted, a wake waits in a bounded queue; its clients get the
    usual cold-start answers, saying why.
    """

    def busy_host(self, **limits) -> Host:
        host = make_host("a", "b", "c", "d", limits=attrs.evolve(LIMITS, **limits))
        host.wake_and_age("a", "b")
        host["a"].request_started()
        host["b"].request_started()
        return host

    def test_a_wake_with_no_one_to_evict_waits_saying_capacity(self):
        host = self.busy_host()
        host.wake("c")
        self.assertIs(host.state("c"), AgentState.STARTING)
        self.assertEqual(host["c"].health(),
                         {"status": "starting", "agent": "c", "reason": "capacity",
                          "phase": "capacity"})
        [queued] = host.events("agent.wake_queued")
        self.assertEqual((queued.agent, queued.fields["reason"], queued.fields["position"],
                          queued.fields["blocking"]),
                         ("c", "capacity", 1, {"a": "in_flight", "b": "in_flight"}))
        self.assertNotIn(("c", 1), host.swarm.scale_calls)

    def test_the_wake_goes_on_once_a_request_in_flight_finishes(self):
        host = self.busy_host()
        host.wake("c")
        host.clock.advance(5)
        host["b"].request_finished()
        self.assertEqual(host.evicted(), [("b", "c")])
        self.assertIs(host.state("c"), AgentState.READY)
        self.assertEqual(host["c"].health(), {"status": "ready", "agent": "c"})

    def test_the_wake_goes_on_once_an_agent_sleeps_by_itself(self):
        host = self.busy_host()
        host.wake("c")
        host["a"].sleep(reason="operator")
        self.assertEqual(host.evicted(), [])
        self.assertIs(host.state("c"), AgentState.READY)

    def test_a_wake_that_finds_no_room_within_queue_timeout_is_given_up(self):
        host = self.busy_host()
        host.wake("c")
        host.clock.advance(120)
        self.assertIs(host.state("c"), AgentState.DEGRADED)
        reason = host["c"].reason
        self.assertTrue(reason.startswith("no room for agent c within limits.queue_timeout "
                                          "(120s): 2 agents awake of limits.max_awake 2"), reason)
        self.assertNotIn(("c", 1), host.swarm.scale_calls)
        self.assertNotIn(("c", 0), host.swarm.scale_calls)  # nothing to scale back
        self.assertEqual(host.capacity.snapshot().waiting, ())

    def test_wakes_wait_in_a_bounded_queue(self):
        host = self.busy_host(max_queued=1)
        host.wake("c")
        host.wake("d")
        self.assertIs(host.state("d"), AgentState.DEGRADED)
        self.assertIn("1 wakes wait for room already (limits.max_queued)", host["d"].reason)

    def test_a_waiting_wake_costs_one_timer_and_none_once_answered(self):
        host = self.busy_host()
        timers = len(host.clock.getDelayedCalls())
        host.wake("c")
        self.assertEqual(len(host.clock.getDelayedCalls()), timers + 1)
        host.clock.advance(QUEUE_RECHECK)
        self.assertEqual(len(host.clock.getDelayedCalls()), timers + 1)
        host["a"].request_finished()
        self.assertEqual(len(host.clock.getDelayedCalls()), timers)

    def test_the_books_show_the_budget_its_use_and_the_queue(self):
        host = self.busy_host()
        host.wake("c")
        self.assertEqual(host.capacity.snapshot(), CapacityStatus(
            max_awake=2, memory=None, awake=2, memory_used=512 * MiB,
            waiting=(WaitingWake("c", host.clock.seconds(), "capacity"),),
            max_queued=100, time=host.clock.seconds()))
        self.assertEqual(host.agents.capacity(), host.capacity.snapshot())

    def test_a_stopped_agent_leaves_the_queue(self):
        host = self.busy_host()
        host.wake("c")
        host["c"].stop()
        self.assertEqual(host.capacity.snapshot().waiting, ())


class CalledOffTests(SynchronousTestCase):
    def test_an_eviction_is_called_off_by_a_request_still_in_flight_after_the_drain(self):
        host = make_host("a", "b", "c", limits=attrs.evolve(LIMITS, max_awake=1))
        host.wake_and_age("a")
        socket = DrainableConnection(host["a"].connections)
        host.wake("b")
        host["a"].request_started()  # a request came in during the drain
        socket.close()
        self.assertIs(host.state("a"), AgentState.READY)
        self.assertIs(host.state("b"), AgentState.STARTING)
        # Not chosen again at once; after the cool-down, it is busy still: b waits on.
        host.clock.advance(EVICTION_COOLDOWN)
        self.assertEqual(host.evicted(), [("a", "b")])
        host["a"].request_finished()
        self.assertEqual(host.evicted(), [("a", "b"), ("a", "b")])
        self.assertIs(host.state("b"), AgentState.READY)


class RefusalTests(SynchronousTestCase):
    def test_an_agent_bigger_than_the_budget_is_refused_and_nobody_evicted(self):
        host = make_host("a", ("huge", {"memory_reservation": 2048 * MiB}),
                         limits=LimitsConfig(memory=1024 * MiB, min_awake=0))
        host.wake("a")
        host.wake("huge")
        self.assertIs(host.state("huge"), AgentState.DEGRADED)
        self.assertEqual(host["huge"].reason, "agent huge needs 2 GiB of memory, more than "
                                              "limits.memory (1 GiB) allows for all agents")
        self.assertEqual(host.evicted(), [])
        self.assertEqual(host.swarm.scale_calls, [("a", 1)])

    def test_a_refused_agent_may_try_again_after_wake_retry(self):
        host = make_host(("huge", {"memory_reservation": 2048 * MiB}),
                         limits=LimitsConfig(memory=1024 * MiB))
        host.wake("huge")
        self.assertEqual(host["huge"].admission(ignored=False).value, "reject")
        host.clock.advance(30)
        self.assertEqual(host["huge"].admission(ignored=False).value, "wake")


class NodeMemoryTests(SynchronousTestCase):
    def test_a_share_of_the_node_is_read_from_swarm(self):
        swarm = BudgetKeepingSwarm()
        swarm.memory_total = 2048 * MiB
        host = make_host("a", "b", swarm=swarm,
                         limits=LimitsConfig(memory=NodeShare(0.25), min_awake=0))
        self.assertEqual(host.capacity.snapshot().memory, 512 * MiB)
        host.wake("a")
        host.wake("b")
        host.wake("a")
        self.assertEqual(host.evicted(), [])
        self.assertEqual(host.capacity.snapshot().memory_used, 512 * MiB)

    def test_wakes_wait_while_the_nodes_memory_is_not_known(self):
        swarm = BudgetKeepingSwarm()
        swarm.available = False
        host = make_host("a", swarm=swarm, limits=LimitsConfig(memory=NodeShare(0.5)))
        swarm.available = True
        host.wake("a")
        self.assertIs(host.state("a"), AgentState.STARTING)
        host.clock.advance(10)
        self.assertEqual(host.capacity.node_memory, FakeSwarm.MEMORY_TOTAL)
        self.assertIs(host.state("a"), AgentState.READY)

    def test_when_the_node_runs_short_the_least_recently_used_are_evicted(self):
        available = [4096 * MiB]
        host = make_host("a", "b", "c", available=lambda: available[0],
                         limits=LimitsConfig(min_available=1024 * MiB, min_awake=60))
        host.wake_and_age("a", "b", "c")
        host.clock.advance(5)
        self.assertEqual(host.evicted(), [])
        available[0] = 600 * MiB
        host.clock.advance(5)
        self.assertEqual(host.evicted(), [("a", None), ("b", None)])
        [first, _] = host.events("agent.evicted")
        self.assertIn("under limits.min_available (1 GiB)", first.fields["reason"])


class ReloadTests(SynchronousTestCase):
    def test_a_new_budget_applies_to_the_waiting_wakes(self):
        host = make_host("a", "b", "c")
        host.wake_and_age("a", "b")
        host["a"].request_started()
        host["b"].request_started()
        host.wake("c")
        host.capacity.reconfigure(attrs.evolve(LIMITS, max_awake=3))
        self.assertIs(host.state("c"), AgentState.READY)
