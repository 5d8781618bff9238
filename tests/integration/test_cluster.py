"""
The multi-node cluster (dev/cluster) does what the orchestrator will need of Swarm
across nodes: an agent on a worker answers over the overlay by its C{tasks.<service>}
name, a dead task is rescheduled, a drained node's task moves to another node, and a
service on the manager (as the orchestrator will run) is reachable from this machine.

The tests also print what they measure (how soon the manager sees a task die on a worker,
how long a drain takes to move a task), prefixed "cluster:" on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

from twisted.trial.unittest import TestCase

from . import cluster, engine

#: The watched event types of orchestrator.swarm.docker (service and container events).
WATCHED_TYPES = ("service", "container")


class ClusterTests(TestCase):
    timeout = 180

    def setUp(self):
        self.cluster = cluster.cluster_or_skip()

    def service_on(self, node: str, prefix: str, **options) -> str:
        name = engine.unique_name(prefix)
        cluster.create_service(self.cluster, name, node=node, **options)
        self.addCleanup(cluster.remove_service, self.cluster, name)
        return name

    def test_cluster_has_a_manager_and_two_workers_labelled_for_agents(self):
        roles = {}
        for node in self.cluster.nodes:
            spec = self.cluster.client().api.inspect_node(node.node_id)
            roles[node.name] = (spec["Spec"]["Role"], spec["Spec"]["Labels"].get("role"),
                                spec["Status"]["State"])
        self.assertEqual(roles, {
            "manager": ("manager", "orchestrator", "ready"),
            "worker1": ("worker", "agents", "ready"),
            "worker2": ("worker", "agents", "ready"),
        })

    def test_service_on_a_worker_answers_a_container_on_the_manager_by_tasks_name(self):
        name = self.service_on("worker1", "overlay")
        task = cluster.wait_for_task(self.cluster, name, node="worker1")

        response, waited = cluster.first_answer(self.cluster, "manager", f"tasks.{name}",
                                                engine.TEST_IMAGE_PORT)

        self.assertIn("hello from httpd", response)
        cluster.report(
            f"HTTP from the manager to tasks.{name} ({task.address}, on worker1) over "
            f"{self.cluster.network} (encrypted: {self.cluster.encrypted}): first answer "
            f"{waited:.2f} s after the task was running")

    def test_answers_larger_than_the_overlay_mtu_arrive_whole(self):
        # 256 KiB: many packets at the overlay's MTU (1450), which a wrong MTU would stall.
        size = 256 * 1024
        name = self.service_on("worker2", "mtu", command=[
            "sh", "-c", f"mkdir -p /big && head -c {size} /dev/zero > /big/zeros "
                        f"&& exec httpd -f -p {engine.TEST_IMAGE_PORT} -h /big"])
        cluster.wait_for_task(self.cluster, name, node="worker2")
        cluster.first_answer(self.cluster, "manager", f"tasks.{name}",
                             engine.TEST_IMAGE_PORT, "/zeros")

        output = cluster.exec_on_overlay(self.cluster, "manager", [
            "sh", "-c", f"printf 'GET /zeros HTTP/1.0\\r\\n\\r\\n' "
                        f"| nc -w 5 tasks.{name} {engine.TEST_IMAGE_PORT} | tail -c {size} "
                        f"| wc -c"])

        self.assertEqual(output.strip(), str(size))

    def test_overlay_traffic_between_nodes_is_encrypted_or_the_kernel_says_why_not(self):
        if not self.cluster.encrypted:
            # A fact of the machine, which no setup changes: never a silent plain
            # overlay. The check (what `up` runs first, requiring encryption by default)
            # names what is missing and refuses.
            done = subprocess.run([str(cluster.CLUSTER_SCRIPT), "check"],
                                  capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "CLUSTER_ENCRYPTION": "required"})
            self.assertEqual(done.returncode, 3, done.stdout + done.stderr)
            self.assertIn("MISSING  ESP with AES-GCM", done.stdout)
            self.assertIn("cannot encrypt overlay traffic between nodes", done.stdout)
            cluster.report(f"the overlay is not encrypted here, and dev/cluster says why: "
                           f"{self.cluster.unencrypted_reason}")
            return
        name = self.service_on("worker1", "ipsec")
        task = cluster.wait_for_task(self.cluster, name, node="worker1")
        cluster.first_answer(self.cluster, "manager", f"tasks.{name}", engine.TEST_IMAGE_PORT)

        # Docker programs ESP security associations between the nodes' addresses.
        states = subprocess.run(["ip", "-n", self.cluster.manager.netns, "xfrm", "state"],
                                capture_output=True, text=True, check=True).stdout

        self.assertIn(f"dst {task.node.address}", states)
        self.assertIn("proto esp", states)

    def test_killed_task_on_a_worker_is_rescheduled_and_the_manager_sees_it_die(self):
        name = self.service_on("worker1", "kill")
        task = cluster.wait_for_task(self.cluster, name, node="worker1")
        since = time.time()

        killed_at = cluster.kill_task_container(self.cluster, task)

        def dead():
            # The task list, as the orchestrator reads it (orchestrator.swarm.docker).
            now = next(t for t in cluster.tasks(self.cluster, name) if t.id == task.id)
            assert now.state != "running", now
            return now, time.monotonic()

        seen, seen_at = cluster.wait_until(dead, timeout=30, interval=0.02)
        replacement = cluster.wait_for_task(self.cluster, name, node="worker1",
                                            other_than=(task.id,))
        rescheduled_at = time.monotonic()
        self.assertNotEqual(replacement.container_id, task.container_id)
        self.assertIn(seen.state, cluster.FINISHED_STATES)
        events = self.manager_events(since, time.time())
        cluster.report(
            f"task death on worker1 visible in the manager's task list after "
            f"{seen_at - killed_at:.3f} s (state {seen.state}: {seen.error}); replacement "
            f"running after {rescheduled_at - killed_at:.2f} s; the manager's "
            f"service/container events meanwhile: {events or 'none'}")

    def test_draining_worker1_moves_its_task_to_worker2(self):
        # worker2 takes no new task until the one to move is on worker1.
        cluster.set_availability(self.cluster, "worker2", "pause")
        self.addCleanup(cluster.activate, self.cluster, "worker2")
        name = engine.unique_name("drain")
        cluster.create_service(self.cluster, name, constraints=("node.labels.role==agents",))
        self.addCleanup(cluster.remove_service, self.cluster, name)
        first = cluster.wait_for_task(self.cluster, name, node="worker1")
        cluster.activate(self.cluster, "worker2")

        started = time.monotonic()
        cluster.drain(self.cluster, "worker1")
        self.addCleanup(cluster.activate, self.cluster, "worker1")
        moved = cluster.wait_for_task(self.cluster, name, node="worker2",
                                      other_than=(first.id,))

        self.assertEqual(moved.node.name, "worker2")
        cluster.report(f"drain of worker1: its task running on worker2 after "
                       f"{time.monotonic() - started:.2f} s")

    def test_service_on_the_manager_serves_this_machine_with_its_config_and_engine(self):
        # The orchestrator's shape: a config file, a host-mode port and the manager's
        # engine through the mounted socket. The probe serves what it finds there.
        probe = PROBE_SERVER.encode()
        deployed = cluster.deploy_on_manager(
            self.cluster, engine.unique_name("manager"), image=engine.ORCHESTRATOR_IMAGE,
            command=["python3", "/etc/probe/server.py"], config=probe,
            config_target="/etc/probe/server.py", docker_socket=True,
            healthcheck=cluster.NO_HEALTHCHECK)
        self.addCleanup(cluster.remove_from_manager, self.cluster, deployed)
        task = cluster.wait_for_task(self.cluster, deployed.name, node="manager")

        def answered():
            try:
                with urllib.request.urlopen(deployed.url, timeout=5) as response:
                    return json.load(response)
            except OSError as error:
                raise AssertionError(f"{deployed.url}: {error}") from error

        found = cluster.wait_until(answered, timeout=30, interval=0.2)

        self.assertEqual(found, {"config": PROBE_SERVER, "engine": "orchc-manager",
                                 "node": task.node.node_id})

    def manager_events(self, since: float, until: float) -> list[str]:
        """
        The service and container events the manager's engine reported between two
        POSIX times: what the orchestrator's event watcher would have seen.
        """
        events = self.cluster.client().api.events(
            since=int(since), until=int(until) + 1, decode=True,
            filters={"type": list(WATCHED_TYPES)})
        return [f"{event['Type']} {event['Action']}" for event in events
                if event.get("timeNano", 0) / 1e9 >= since]


#: A tiny HTTP server run from the Docker config it is: it answers with its own source,
#: and the engine name and node id that /var/run/docker.sock leads to.
PROBE_SERVER = """\
import http.client, http.server, json, socket


class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/var/run/docker.sock")


class Probe(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        engine = Engine("localhost")
        engine.request("GET", "/info")
        info = json.load(engine.getresponse())
        body = json.dumps({"config": open(__file__).read(), "engine": info["Name"],
                           "node": info["Swarm"]["NodeID"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("", 8080), Probe).serve_forever()
"""
