"""
Agents beyond one node, on the real three-node Swarm of dev/cluster (a manager and two
workers, each its own dockerd in its own network namespace; docs/multinode.md): the
orchestrator from this tree deployed on the manager, its agents on the workers.

- A task's container killed on a worker (SIGKILL through that worker's engine): how soon
  the agent is degraded (the manager's engine hears no container event of a worker: the
  orchestrator sees it in the task list), and ready again once Swarm restarted it.
- The agent's worker drained: degraded, naming the node, then ready on the other worker.
- An agent with two replicas on the two workers under a steady loop of GETs through the
  proxy while the task serving them is killed: the requests that failed.

The scenarios are the integration tests' (tests/integration/multinode.py); the
orchestrator's image is built from this tree under a tag of its own and loaded into the
cluster's engines.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import unittest

from bench.harness import REPO, Bench, BenchError
from bench.suites.base import Options, Section, number, table

IMAGE = "orchestrator-test/orchestrator:bench-multinode"
#: Kills measured (each on a fresh always-on agent's running task).
KILLS = 3
#: Request loops through a kill.
LOOPS = 2
LOOP_SECONDS = 8.0
LOOP_RATE = 25.0


class MultiNodeSuite:
    """
    Needs root, a kernel with network namespaces, VXLAN and overlayfs (dev/cluster
    check), and the host's Docker engine for the images.
    """

    name = "multinode"
    title = "Agents on Swarm workers: a task killed, a node drained, two replicas"

    def run(self, bench: Bench, options: Options) -> Section:
        try:
            from tests.integration import cluster, multinode
        except ImportError as error:
            raise BenchError(f"the integration test helpers do not import: {error}") from None

        try:
            the_cluster = cluster.cluster_or_skip()
        except (unittest.SkipTest, cluster.ClusterUnavailable) as problem:
            raise BenchError(f"no multi-node cluster: {problem}") from None
        _build_and_load(IMAGE)
        kills, drain, loops = [], None, []
        agents = []
        try:
            kill = multinode.agent_service(the_cluster, "bench-mn-kill", replicas=1,
                                           node="worker2")
            pair = multinode.agent_service(the_cluster, "bench-mn-pair", replicas=0)
            moving = multinode.agent_service(the_cluster, "bench-mn-drain", replicas=1)
            agents += [kill, pair, moving]
            deployed = multinode.deploy(the_cluster, {kill: {"policy": "always_on"},
                                                      pair: {"replicas": 2},
                                                      moving: {"policy": "always_on"}},
                                        image=IMAGE)
            drained = None
            try:
                for _ in range(KILLS):
                    kills.append(multinode.kill_to_degraded(deployed, kill))
                deployed.first_answer(pair)
                for _ in range(LOOPS):
                    loops.append(multinode.requests_through_a_kill(
                        deployed, pair, seconds=LOOP_SECONDS, rate=LOOP_RATE))
                deployed.wait_state(moving, "ready", timeout=90)
                [task] = deployed.tasks(moving)
                drained = task.node.name
                drain = multinode.drain_and_recover(deployed, moving, drained)
            finally:
                if drained is not None:
                    cluster.activate(the_cluster, drained)
                cluster.remove_from_manager(the_cluster, deployed.service)
        finally:
            for agent in agents:
                cluster.remove_service(the_cluster, agent.service)
        return self._section(the_cluster, kills, drain, loops)

    @staticmethod
    def _section(the_cluster, kills, drain, loops) -> Section:
        degraded = statistics.median(kill.to_degraded for kill in kills)
        ready = statistics.median(kill.to_ready for kill in kills)
        failed = sum(loop.failed for loop in loops)
        sent = sum(loop.requests for loop in loops)
        rows = [[f"kill {index + 1}", kill.node, f"{kill.to_degraded:.2f}",
                 f"{kill.to_ready:.2f}", kill.reason] for index, kill in enumerate(kills)]
        rows.append(["drain", f"{drain.drained} -> {drain.moved_to}", f"{drain.to_degraded:.2f}",
                     f"{drain.to_ready:.2f}", drain.reason])
        loop_rows = [[f"{index + 1}", number(loop.requests), str(loop.failed),
                      ", ".join(f"{count}" for count in sorted(loop.by_task.values())),
                      loop.degraded_reason or "not seen",
                      "; ".join(loop.failures) or "-"]
                     for index, loop in enumerate(loops)]
        body = "\n\n".join([
            "The orchestrator from this tree runs on the manager (its engine through the "
            "socket, on the agents' overlay, the admin API polled every 20 ms from this "
            "machine); each agent is a demo agent's service placed on the workers and "
            f"reached by `tasks.<service>`. The overlay is "
            f"{'encrypted' if the_cluster.encrypted else 'NOT encrypted'} here"
            f"{'' if the_cluster.encrypted else ' (' + str(the_cluster.unencrypted_reason) + ')'}.",
            "**A task killed on its worker, and the worker drained** (an always-on agent; "
            "seconds from the kill, or the drain, until the admin API says so):",
            table(["what", "node", "to degraded (s)", "to ready (s)", "reason"], rows),
            f"**Two replicas, the serving one killed** under GETs through the proxy at "
            f"{LOOP_RATE:g}/s for {LOOP_SECONDS:g} s (an on-demand agent with "
            f"`replicas: 2`, its tasks on the two workers; the task killed is the one "
            f"that answered last, the one the proxy's kept-alive connection is to):",
            table(["loop", "requests", "failed", "answers per task", "degraded meanwhile",
                   "failures"], loop_rows),
        ])
        summary = (f"multinode: a task killed on a worker -> agent degraded after "
                   f"{degraded:.2f} s (median of {len(kills)}), ready after {ready:.2f} s; "
                   f"2 replicas, one killed: {failed} of {sent} requests failed",)
        return Section("Agents on Swarm workers", body, summary, failed=failed > 0)


def _build_and_load(image: str) -> None:
    """
    The orchestrator's image from this tree under C{image} (no shared tag is rebuilt),
    copied into every node of the cluster.
    """
    env = {**os.environ, "ORCHESTRATOR_IMAGE": image}
    for command in ([str(REPO / "deploy" / "images" / "build")],
                    [str(REPO / "dev" / "cluster"), "load", image]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
