"""
The control plane at scale: a thousand configured agents, most asleep. Start-up reads
Swarm in a bounded number of calls, a sleeping agent costs no timer and no Swarm call
while nothing happens, and a route lookup costs the same however many hosts there are.
(Counts, not timings: the figures are bench/'s.)
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.routes import RouteTable
from orchestrator.agents.taskpoll import TASK_POLL
from orchestrator.config.model import Config, LimitsConfig, ListenConfig, NodeShare
from orchestrator.service import OrchestratorService
from orchestrator.states import AgentState
from tests.helpers import CallCountingSwarm, ScriptedProber, agent_config

HOUR = 3600.0


def fleet(count: int, awake: int = 0, limits: LimitsConfig | None = None,
          swarm: CallCountingSwarm | None = None):
    """
    A started orchestrator for C{count} on-demand agents (the first C{awake} running)
    and its fake Swarm (one node unless C{swarm} has more) and clock.
    """
    clock = MemoryReactorClock()
    clock.advance(1_000_000)
    swarm = swarm if swarm is not None else CallCountingSwarm()
    configs = []
    for number in range(count):
        name = f"agent{number:04}"
        swarm.add_service(name, replicas=1 if number < awake else 0)
        configs.append(agent_config(name, hosts=(f"{name}.example.com",
                                                 f"*.{name}.example.com")))
    config = Config(source="test.yaml", agents=tuple(configs),
                    listen=ListenConfig(proxy="tcp:8080", admin="tcp:9090"),
                    limits=limits or LimitsConfig(max_awake=100, memory=NodeShare(0.5)))
    service = OrchestratorService(config, swarm=swarm, reactor=clock, prober=ScriptedProber())
    service.startService()
    clock.advance(0)
    return service, swarm, clock


class StartUpTests(SynchronousTestCase):
    def test_a_thousand_agents_are_reconciled_in_a_handful_of_swarm_calls(self):
        service, swarm, _ = fleet(1000)
        self.assertTrue(all(agent.state is AgentState.SLEEPING
                            for agent in service.agents.values()))
        # One read of every service at start, one when the event stream opens, the
        # subscription, and the node's memory for the budget: none per agent.
        self.assertEqual({call: n for call, n in swarm.calls.items() if n},
                         {"statuses": 2, "events": 1, "node_memory": 1})


class SleepingCostsNothingTests(SynchronousTestCase):
    def test_a_sleeping_agent_costs_no_timer(self):
        few = len(fleet(10)[2].getDelayedCalls())
        many = len(fleet(1000)[2].getDelayedCalls())
        self.assertEqual(many, few)

    def test_sleeping_agents_make_no_swarm_call_in_hours_of_quiet(self):
        _, swarm, clock = fleet(1000)
        before = swarm.total
        for _ in range(6 * 60):
            clock.advance(60)
        self.assertEqual(swarm.total, before)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_awake_agents_on_the_engines_own_node_are_left_to_its_events(self):
        service, swarm, clock = fleet(1000, awake=100)
        self.assertEqual(sum(agent.state is AgentState.READY
                             for agent in service.agents.values()), 100)
        clock.advance(TASK_POLL)  # one read: every task is on this node
        timers = len(clock.getDelayedCalls())
        self.assertLessEqual(timers, 2 * 100)  # the health loop and the idle timer of each
        before = swarm.total
        for _ in range(60):
            clock.advance(10)
        self.assertEqual(swarm.total, before)

    def test_awake_agents_on_other_nodes_have_their_tasks_read_together(self):
        swarm = CallCountingSwarm()
        swarm.add_node("worker1")
        swarm.drain_node("fake-manager")
        service, swarm, clock = fleet(1000, awake=100, swarm=swarm)
        timers = len(clock.getDelayedCalls())
        self.assertLessEqual(timers, 2 * 100 + 1)  # and the one task poll
        before = dict(swarm.calls)
        for _ in range(600):
            clock.advance(TASK_POLL)
        made = {call: n - before.get(call, 0) for call, n in swarm.calls.items()
                if n != before.get(call, 0)}
        # One read of the hundred awake agents' services per poll, whatever their number.
        self.assertEqual(made, {"statuses": 600})
        self.assertEqual(swarm.statuses_asked[-1], sorted(
            agent.config.service for agent in service.agents.values()
            if agent.state is AgentState.READY))


class CountingDict(dict):
    """
    A dict that counts its lookups.
    """

    lookups = 0

    def get(self, key, default=None):
        CountingDict.lookups += 1
        return super().get(key, default)


class RouteLookupTests(SynchronousTestCase):
    def lookups(self, count: int, host: str) -> int:
        table: RouteTable[str] = RouteTable()
        for number in range(count):
            table.add(f"agent{number:04}.example.com", "exact", owner=str(number))
            table.add(f"*.agent{number:04}.example.com", "wildcard", owner=str(number))
        table._exact = CountingDict(table._exact)
        table._wildcard = CountingDict(table._wildcard)
        CountingDict.lookups = 0
        table.match(host)
        return CountingDict.lookups

    def test_a_lookup_costs_the_same_with_ten_or_ten_thousand_agents(self):
        for host in ("agent0007.example.com", "x.y.agent0007.example.com", "nobody.example"):
            self.assertEqual(self.lookups(10, host), self.lookups(10_000, host), host)

    def test_a_lookup_costs_one_probe_per_label(self):
        self.assertEqual(self.lookups(1000, "agent0007.example.com"), 1)
        self.assertEqual(self.lookups(1000, "x.y.agent0007.example.com"), 3)
