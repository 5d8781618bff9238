"""
Agents on several nodes: the awake agents' tasks read together every half second, so a
task that dies on a worker (whose container events the manager never hears) makes its
agent degraded within about a second; a drained or lost node names itself in the
reason; an agent asking for several replicas is degraded while fewer run. The whole
service on a fake Swarm of three nodes and a clock: nothing waits.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.taskpoll import TASK_POLL, TaskPoll
from orchestrator.config.model import Config, LimitsConfig, ListenConfig, Policy
from orchestrator.policy.admission import Admission
from orchestrator.service import OrchestratorService
from orchestrator.states import AgentState
from tests.helpers import CallCountingSwarm, ScriptedProber, agent_config, make_agent


class Cluster:
    """
    A started orchestrator on the manager of a fake three-node swarm whose manager takes
    no agent task (as deploy/stack.yaml places them), with one agent C{alpha}; without
    C{workers}, a swarm of the manager alone.
    """

    def __init__(self, test: SynchronousTestCase, running: int = 0, workers: bool = True,
                 **agent) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        self.swarm = CallCountingSwarm()
        if workers:
            self.worker1 = self.swarm.add_node("worker1")
            self.worker2 = self.swarm.add_node("worker2")
            self.swarm.drain_node("fake-manager")
        self.swarm.add_service("alpha", replicas=running)
        config = Config(source="test.yaml", agents=(agent_config("alpha", **agent),),
                        listen=ListenConfig(proxy="tcp:8080", admin="tcp:9090"),
                        limits=LimitsConfig())
        self.service = OrchestratorService(config, swarm=self.swarm, reactor=self.clock,
                                           prober=ScriptedProber())
        self.service.startService()
        test.addCleanup(self.service.stopService)
        self.clock.advance(0)

    @property
    def agent(self):
        return self.service.agents["alpha"]

    def running(self):
        return self.successful(self.swarm.status("alpha")).running_tasks

    def successful(self, deferred):
        found = []
        deferred.addCallback(found.append)
        return found[0]

    def wake(self) -> None:
        """
        A request comes: the agent wakes (at once when the fake runs tasks at once).
        """
        self.agent.admit(ignored=False)
        self.clock.advance(0)


class WorkerTaskDeathTests(SynchronousTestCase):
    def test_a_task_dying_on_a_worker_degrades_its_agent_within_a_second(self):
        cluster = Cluster(self, running=1, policy=Policy.ALWAYS_ON)
        self.assertIs(cluster.agent.state, AgentState.READY)
        [task] = cluster.running()
        self.assertIn(task.node_id, (cluster.worker1, cluster.worker2))
        cluster.swarm.auto_run = False  # the replacement waits out its restart delay
        cluster.swarm.kill_task("alpha", task.id)
        # Nothing on the event stream: a worker's container events stay on the worker.
        cluster.clock.advance(0)
        self.assertIs(cluster.agent.state, AgentState.READY)
        cluster.clock.advance(TASK_POLL)
        self.assertIs(cluster.agent.state, AgentState.DEGRADED)
        self.assertEqual(cluster.agent.reason, "no task running (task: non-zero exit (137)); "
                                               "Swarm is restarting it")

    def test_the_agent_is_ready_again_once_swarm_restarted_the_task_without_a_scale(self):
        cluster = Cluster(self, running=1, policy=Policy.ALWAYS_ON)
        [task] = cluster.running()
        cluster.swarm.auto_run = False
        cluster.swarm.kill_task("alpha", task.id)
        cluster.clock.advance(TASK_POLL)
        cluster.swarm.run_tasks("alpha")
        cluster.clock.advance(TASK_POLL)
        self.assertIs(cluster.agent.state, AgentState.READY)
        self.assertEqual(cluster.swarm.scale_calls, [])

    def test_a_drained_node_names_itself_until_the_task_runs_elsewhere(self):
        cluster = Cluster(self, running=1, policy=Policy.ALWAYS_ON)
        [task] = cluster.running()
        hostname = "worker1" if task.node_id == cluster.worker1 else "worker2"
        cluster.swarm.auto_run = False
        cluster.swarm.drain_node(hostname)
        cluster.clock.advance(0)  # the node event: nodes and tasks read at once
        self.assertIs(cluster.agent.state, AgentState.DEGRADED)
        self.assertEqual(cluster.agent.reason,
                         f"no task running (task {task.id} left node {hostname} is "
                         f"drained); Swarm is restarting it")
        cluster.swarm.run_tasks("alpha")
        cluster.clock.advance(TASK_POLL)
        self.assertIs(cluster.agent.state, AgentState.READY)
        [moved] = cluster.running()
        self.assertNotEqual(moved.node_id, task.node_id)
        self.assertEqual(cluster.swarm.scale_calls, [])

    def test_a_probe_still_answered_while_the_task_moves_does_not_end_it(self):
        # A drained task answers for a moment; the agent is ready once Swarm says a task
        # runs again, not before.
        cluster = Cluster(self, running=1, policy=Policy.ALWAYS_ON)
        [task] = cluster.running()
        cluster.swarm.auto_run = False
        cluster.swarm.drain_node("worker1" if task.node_id == cluster.worker1 else "worker2")
        cluster.clock.advance(0)
        cluster.clock.advance(10)  # the health loop's probes pass meanwhile
        self.assertIs(cluster.agent.state, AgentState.DEGRADED)
        self.assertEqual(cluster.agent.status().public_reason,
                         "the agent's service has no running task")

    def test_a_node_down_names_itself(self):
        cluster = Cluster(self, running=1, policy=Policy.ALWAYS_ON)
        [task] = cluster.running()
        hostname = "worker1" if task.node_id == cluster.worker1 else "worker2"
        cluster.swarm.auto_run = False
        cluster.swarm.node_down(hostname)
        cluster.clock.advance(0)
        self.assertIn(f"left node {hostname} is down: heartbeat failure",
                      cluster.agent.reason)

    def test_one_agents_poll_failing_leaves_it_to_retry_and_the_poll_going(self):
        cluster = Cluster(self, running=1, policy=Policy.ALWAYS_ON)
        cluster.swarm.available = False
        cluster.clock.advance(TASK_POLL)
        cluster.swarm.available = True
        before = cluster.swarm.calls["statuses"]
        cluster.clock.advance(TASK_POLL)
        self.assertEqual(cluster.swarm.calls["statuses"], before + 1)


class ReplicaTests(SynchronousTestCase):
    def test_a_wake_asks_for_the_replicas_and_is_ready_when_one_answers(self):
        cluster = Cluster(self, replicas=2)
        cluster.wake()
        self.assertEqual(cluster.swarm.scale_calls, [("alpha", 2)])
        self.assertIs(cluster.agent.state, AgentState.READY)
        self.assertEqual(sorted(task.node_id for task in cluster.running()),
                         sorted([cluster.worker1, cluster.worker2]))
        cluster.clock.advance(TASK_POLL * 4)
        self.assertIs(cluster.agent.state, AgentState.READY)

    def test_replicas_still_starting_after_a_wake_leave_the_agent_ready(self):
        cluster = Cluster(self, replicas=2)
        cluster.swarm.auto_run = False
        cluster.wake()
        first, second = cluster.successful(cluster.swarm.status("alpha")).tasks
        # One runs and answers: ready; the other still starting is not a replica lost.
        cluster.swarm._started(cluster.swarm._services["alpha"], first)
        cluster.clock.advance(TASK_POLL)
        self.assertIs(cluster.agent.state, AgentState.READY)
        cluster.clock.advance(TASK_POLL * 4)
        self.assertIs(cluster.agent.state, AgentState.READY)

    def test_one_replica_of_two_lost_degrades_saying_so_and_still_serves(self):
        cluster = Cluster(self, replicas=2)
        cluster.wake()
        cluster.clock.advance(TASK_POLL)
        lost = cluster.running()[0]
        cluster.swarm.auto_run = False
        cluster.swarm.kill_task("alpha", lost.id)
        cluster.clock.advance(TASK_POLL)
        self.assertIs(cluster.agent.state, AgentState.DEGRADED)
        self.assertEqual(cluster.agent.reason, "1 of 2 replicas running (task: non-zero "
                                               "exit (137)); Swarm is replacing it")
        self.assertTrue(cluster.agent.backend_running)
        self.assertEqual(cluster.agent.status().public_reason,
                         "fewer of the agent's replicas run than it asks for")
        self.assertIs(cluster.agent.admit(ignored=False), Admission.FORWARD)
        # A passing probe (the other replica answers) does not hide the shortage.
        cluster.clock.advance(10)
        self.assertIs(cluster.agent.state, AgentState.DEGRADED)
        cluster.swarm.run_tasks("alpha")
        cluster.clock.advance(TASK_POLL)
        self.assertIs(cluster.agent.state, AgentState.READY)

    def test_the_addresses_of_a_lost_replica_are_known_down_not_the_others(self):
        cluster = Cluster(self, replicas=2)
        cluster.wake()
        cluster.clock.advance(TASK_POLL)
        lost, kept = cluster.running()
        cluster.swarm.auto_run = False
        cluster.swarm.kill_task("alpha", lost.id)
        cluster.clock.advance(TASK_POLL)
        # The lost task's, and its replacement's while it does not run yet.
        self.assertLessEqual(frozenset(lost.ips), cluster.agent.down_addresses)
        self.assertNotIn(kept.ips[0], cluster.agent.down_addresses)
        cluster.swarm.run_tasks("alpha")
        cluster.clock.advance(TASK_POLL)
        running = {ip for task in cluster.running() for ip in task.ips}
        self.assertEqual(running & cluster.agent.down_addresses, set())

    def test_an_agent_with_two_replicas_reserves_twice_its_memory(self):
        cluster = Cluster(self, replicas=2, memory=100 * 2 ** 20)
        cluster.wake()
        self.assertEqual(cluster.service.capacity.snapshot().memory_used, 200 * 2 ** 20)


class OneNodeTests(SynchronousTestCase):
    def test_an_agent_whose_tasks_run_on_the_engines_node_leaves_the_poll(self):
        cluster = Cluster(self, running=1, workers=False, policy=Policy.ALWAYS_ON)
        poll = cluster.service.task_poll
        cluster.clock.advance(TASK_POLL)  # the first read: its task is on this node
        self.assertEqual(poll.watched, 0)
        before = cluster.swarm.calls["statuses"]
        cluster.clock.advance(TASK_POLL * 10)
        self.assertEqual(cluster.swarm.calls["statuses"], before)
        # Its death is heard on the engine's events, at once.
        cluster.swarm.auto_run = False
        [task] = cluster.running()
        cluster.swarm.kill_task("alpha", task.id)
        cluster.clock.advance(0)
        self.assertIs(cluster.agent.state, AgentState.DEGRADED)
        # Its replacement is placed on this node too: left to the events as well.
        self.assertEqual(poll.watched, 0)
        cluster.swarm.run_tasks("alpha")
        cluster.clock.advance(0)
        self.assertIs(cluster.agent.state, AgentState.READY)
        self.assertEqual(cluster.swarm.calls["statuses"], before)

    def test_an_always_on_agent_with_no_service_is_made_ready_by_its_probe(self):
        # As the bench runs its agents: degraded by each reconciliation with Swarm, ready
        # again at the next passing probe (unlike a shortage of replicas).
        fixture = make_agent(exists=False, policy=Policy.ALWAYS_ON)
        fixture.clock.advance(10)
        self.assertIs(fixture.agent.state, AgentState.READY)


class CostTests(SynchronousTestCase):
    def test_sleeping_agents_are_not_read_and_the_poll_has_no_timer(self):
        cluster = Cluster(self)
        before = cluster.swarm.total
        timers = len(cluster.clock.getDelayedCalls())
        for _ in range(100):
            cluster.clock.advance(TASK_POLL)
        self.assertEqual(cluster.swarm.total, before)
        self.assertEqual(len(cluster.clock.getDelayedCalls()), timers)
        self.assertEqual(cluster.service.task_poll.watched, 0)

    def test_an_agent_that_sleeps_leaves_the_poll(self):
        cluster = Cluster(self)
        cluster.wake()
        self.assertEqual(cluster.service.task_poll.watched, 1)
        cluster.clock.advance(900)  # idle: it sleeps
        cluster.clock.advance(60)
        self.assertIs(cluster.agent.state, AgentState.SLEEPING)
        self.assertEqual(cluster.service.task_poll.watched, 0)
        before = cluster.swarm.calls["statuses"]
        cluster.clock.advance(TASK_POLL * 10)
        self.assertEqual(cluster.swarm.calls["statuses"], before)


class TaskPollTests(SynchronousTestCase):
    """
    The poll on its own.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.swarm = CallCountingSwarm()
        self.swarm.add_service("a", replicas=1)
        self.swarm.add_service("b", replicas=1)
        self.poll = TaskPoll(self.swarm, self.clock)
        self.seen: list = []

    def test_the_watched_services_are_read_in_one_call_each_interval(self):
        self.poll.watch("x", "a", self.seen.append)
        self.poll.watch("y", "b", self.seen.append)
        self.clock.advance(TASK_POLL)
        self.assertEqual(self.swarm.statuses_asked, [["a", "b"]])
        self.assertEqual(sorted(status.name for status in self.seen), ["a", "b"])

    def test_a_watcher_that_raises_does_not_stop_the_others_or_the_poll(self):
        def broken(status):
            raise RuntimeError("boom")

        self.poll.watch("x", "a", broken)
        self.poll.watch("y", "b", self.seen.append)
        self.clock.advance(TASK_POLL)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(TASK_POLL)
        self.assertEqual(len(self.seen), 2)
        self.flushLoggedErrors(RuntimeError)

    def test_a_missing_service_is_handed_as_unknown(self):
        self.poll.watch("x", "gone", self.seen.append)
        self.clock.advance(TASK_POLL)
        self.assertEqual(str(self.seen[0]), "no Swarm service named 'gone'")

    def test_an_engine_away_keeps_the_pace(self):
        self.poll.watch("x", "a", self.seen.append)
        self.swarm.available = False
        self.clock.advance(TASK_POLL)
        self.assertEqual(self.seen, [])
        self.swarm.available = True
        self.clock.advance(TASK_POLL)
        self.assertEqual([status.name for status in self.seen], ["a"])

    def test_an_engine_away_is_logged_once_and_its_return_once(self):
        self.poll.watch("x", "a", self.seen.append)
        self.swarm.available = False
        with capturedLogs() as logged:
            for _ in range(20):
                self.clock.advance(TASK_POLL)
            self.swarm.available = True
            self.clock.advance(TASK_POLL)
            self.clock.advance(TASK_POLL)
        self.assertEqual([event["log_format"] for event in logged], [
            "could not read the awake agents' tasks: {error}",
            "the awake agents' tasks can be read again",
        ])

    def test_nodes_are_read_at_the_first_watch_and_on_node_news(self):
        self.poll.watch("x", "a", self.seen.append)
        self.assertEqual(self.swarm.calls["nodes"], 1)
        node = self.swarm.add_node("worker1")
        self.poll.nodes_changed()
        self.assertIn(node, self.poll.nodes)
        self.assertEqual(self.swarm.calls["nodes"], 2)
        # The node's news has the tasks read at once, not at the next interval.
        self.assertEqual([status.name for status in self.seen], ["a"])

    def test_stop_cancels_the_timer_and_reads_nothing_more(self):
        self.poll.watch("x", "a", self.seen.append)
        self.poll.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.poll.watch("y", "b", self.seen.append)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_forgetting_the_last_watcher_cancels_the_timer(self):
        self.poll.watch("x", "a", self.seen.append)
        self.poll.forget("x")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nodes_unreadable_leave_them_unknown_and_the_tasks_read(self):
        self.swarm.available = False
        self.poll.watch("x", "a", self.seen.append)
        self.assertEqual(dict(self.poll.nodes), {})
        self.swarm.available = True
        self.clock.advance(TASK_POLL)
        self.assertEqual([status.name for status in self.seen], ["a"])
