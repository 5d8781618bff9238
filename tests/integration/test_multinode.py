"""
The orchestrator on a real Swarm of three nodes (dev/cluster): deployed on the manager,
its agents on the workers, reached over the overlay by C{tasks.<service>}. An agent on a
worker woken through the proxy, over HTTP and WebSocket; its task killed on the worker
(degraded within about a second, from the task list alone: the manager hears no
container event of a worker), then ready again once Swarm restarted it; its worker
drained (degraded naming the node, ready on the other worker, no scale call of ours);
and an agent with two replicas on two workers answering a steady request loop with no
failure while one of its tasks is killed.

The figures are printed (prefixed "cluster:") and bench/reliability measures the same
scenarios (tests/integration/multinode.py) for docs/reliability.md.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from . import cluster, multinode


class MultiNodeTests(TestCase):
    timeout = 240

    def setUp(self):
        self.cluster = cluster.cluster_or_skip()

    def deploy(self, **agents: tuple[multinode.Agent, dict]) -> multinode.Deployed:
        deployed = multinode.deploy(self.cluster, dict(agents.values()))
        self.addCleanup(deployed.remove)
        return deployed

    def agent(self, prefix: str, **options) -> multinode.Agent:
        agent = multinode.agent_service(self.cluster, prefix, **options)
        self.addCleanup(cluster.remove_service, self.cluster, agent.service)
        return agent

    def test_an_agent_on_a_worker_wakes_through_the_proxy_for_http_and_websocket(self):
        agent = self.agent("mn-wake", replicas=0, node="worker1")
        deployed = self.deploy(wake=(agent, {}))
        deployed.wait_state(agent, "sleeping", timeout=30)

        body = deployed.first_answer(agent)

        [task] = deployed.tasks(agent)
        self.assertEqual(task.node.name, "worker1")
        self.assertIn(f"Hello from {task.container_id[:12]}", body.decode())
        self.assertEqual(deployed.websocket_echo(agent, "hello", b"\x00\x01"),
                         ["hello", b"\x00\x01"])

    def test_a_task_killed_on_a_worker_degrades_its_agent_within_a_second(self):
        agent = self.agent("mn-kill", replicas=1, node="worker2")
        deployed = self.deploy(kill=(agent, {"policy": "always_on"}))

        outcome = multinode.kill_to_degraded(deployed, agent)

        cluster.report(f"task killed on {outcome.node}: agent degraded after "
                       f"{outcome.to_degraded:.2f} s ({outcome.reason}), ready again "
                       f"after {outcome.to_ready:.2f} s")
        self.assertEqual(outcome.node, "worker2")
        self.assertLess(outcome.to_degraded, 1.5)
        self.assertIn("no task running", outcome.reason)
        # Always-on: Swarm restarted it, the orchestrator never scaled it.
        spec = self.cluster.client().api.inspect_service(agent.service)["Spec"]
        self.assertEqual(spec["Mode"]["Replicated"]["Replicas"], 1)

    def test_a_drained_worker_degrades_its_agent_naming_it_until_the_task_moved(self):
        # worker2 takes no task until the agent's is on worker1.
        cluster.set_availability(self.cluster, "worker2", "pause")
        self.addCleanup(cluster.activate, self.cluster, "worker2")
        agent = self.agent("mn-drain", replicas=1)
        first = cluster.wait_for_task(self.cluster, agent.service, node="worker1")
        cluster.activate(self.cluster, "worker2")
        deployed = self.deploy(drain=(agent, {"policy": "always_on"}))
        self.addCleanup(cluster.activate, self.cluster, "worker1")

        outcome = multinode.drain_and_recover(deployed, agent, "worker1")

        cluster.report(f"worker1 drained: agent degraded after {outcome.to_degraded:.2f} s "
                       f"({outcome.reason}), ready on {outcome.moved_to} after "
                       f"{outcome.to_ready:.2f} s")
        self.assertIn(f"task {first.id[:12]} left node orchc-worker1 is drained",
                      outcome.reason)
        self.assertEqual(outcome.moved_to, "worker2")
        spec = self.cluster.client().api.inspect_service(agent.service)["Spec"]
        self.assertEqual(spec["Mode"]["Replicated"]["Replicas"], 1)

    def test_two_replicas_on_two_workers_answer_every_request_while_one_is_killed(self):
        agent = self.agent("mn-pair", replicas=0)
        deployed = self.deploy(pair=(agent, {"replicas": 2}))
        deployed.first_answer(agent)

        outcome = multinode.requests_through_a_kill(deployed, agent)

        cluster.report(f"2 replicas, one killed under {outcome.requests} requests in "
                       f"{outcome.seconds:.1f} s: {outcome.failed} failed "
                       f"{list(outcome.failures)}; answers by task {outcome.by_task}; "
                       f"degraded meanwhile: {outcome.degraded_reason}")
        self.assertEqual((outcome.failed, outcome.failures), (0, ()))
        self.assertGreater(outcome.requests, 100)
        self.assertIn("1 of 2 replicas running", outcome.degraded_reason or "")
        deployed.wait_state(agent, "ready", timeout=60)
