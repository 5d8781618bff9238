"""
The orchestrator on the multi-node cluster (dev/cluster): deployed on the manager as
deploy/stack.yaml deploys it (the manager's engine through the socket, on the agents'
overlay, its proxy and admin ports published in host mode), its agents Swarm services
placed on the workers and reached by C{tasks.<service>}; and the scenarios that the
integration tests check and bench/reliability measures (one code for both):

  - L{kill_to_degraded}: a task's container killed on a worker, until the agent is
    degraded, then ready again once Swarm restarted it;
  - L{drain_and_recover}: the agent's worker drained, until it is degraded naming the
    node, then ready on the other worker;
  - L{requests_through_a_kill}: a steady loop of requests to an agent with two replicas
    on two workers while one of its tasks is killed, counting the failures.

Blocking, as the Docker SDK and L{cluster} are. Every address used is the cluster's
(192.168.251.0/24, reached from this machine) or inside its namespaces.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time

import attrs

from . import cluster, engine

#: The orchestrator's image: deploy/images/build's tag by default; ORCHESTRATOR_IMAGE
#: (as the build script names it) picks another (a tag built from another tree).
ORCHESTRATOR_IMAGE = os.environ.get("ORCHESTRATOR_IMAGE", engine.ORCHESTRATOR_IMAGE)
PROXY_PORT = 8080
ADMIN_PORT = 9090
#: Placement on the cluster's agent nodes (its workers carry role=agents).
ON_WORKERS = "node.labels.role==agents"


@attrs.frozen
class Agent:
    """
    One agent of the deployed orchestrator and its Swarm service.
    """

    name: str
    service: str

    @property
    def host(self) -> str:
        return f"{self.name}.test"


@attrs.frozen
class Deployed:
    """
    The orchestrator running on the manager, and its agents.
    """

    cluster: cluster.Cluster
    service: cluster.ManagerService
    admin_port: int
    agents: tuple[Agent, ...]

    @property
    def address(self) -> str:
        return self.cluster.manager.address

    def agent_view(self, agent: Agent) -> dict:
        """
        The admin API's view of C{agent} (C{status}: its state; C{reason}, ...).
        """
        connection = http.client.HTTPConnection(self.address, self.admin_port, timeout=5)
        try:
            connection.request("GET", f"/api/agents/{agent.name}")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise AssertionError(f"admin API: {response.status} {body[:200]!r}")
        return json.loads(body)

    def wait_state(self, agent: Agent, state: str, *, timeout: float = 60.0,
                   interval: float = 0.05) -> tuple[dict, float]:
        """
        Wait until C{agent} is in C{state}; return its view and the time it was seen
        (C{time.monotonic()}).
        """

        def reached() -> tuple[dict, float]:
            try:
                view = self.agent_view(agent)
            except OSError as error:
                raise AssertionError(f"admin API unreachable: {error}") from error
            assert view["status"] == state, f"{agent.name} is {view['status']}: {view}"
            return view, time.monotonic()

        return cluster.wait_until(reached, timeout=timeout, interval=interval)

    def get(self, agent: Agent, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
        """
        One GET through the proxy, as a client outside the cluster sends it.
        """
        connection = http.client.HTTPConnection(self.address, self.service.port,
                                                timeout=timeout)
        try:
            connection.request("GET", path, headers={"Host": agent.host})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def first_answer(self, agent: Agent, *, timeout: float = 90.0) -> bytes:
        """
        GET through the proxy until it answers 200 (a sleeping agent's first requests
        wake it and are told to retry); the body.
        """

        def answered() -> bytes:
            try:
                status, body = self.get(agent)
            except OSError as error:
                raise AssertionError(f"proxy unreachable: {error}") from error
            assert status == 200, (status, body[:200])
            return body

        return cluster.wait_until(answered, timeout=timeout, interval=0.25)

    def websocket_echo(self, agent: Agent, *messages: str | bytes) -> list[str | bytes]:
        """
        Open a WebSocket through the proxy to the agent's C{/ws} echo, send C{messages},
        return the answers.
        """
        sock = socket.create_connection((self.address, self.service.port), timeout=10)
        return engine.websocket_echo(sock, agent.host, messages)

    def tasks(self, agent: Agent) -> list[cluster.Task]:
        return [task for task in cluster.tasks(self.cluster, agent.service)
                if task.state == "running" and task.desired_state == "running"]

    def remove(self) -> None:
        cluster.remove_from_manager(self.cluster, self.service)
        for agent in self.agents:
            cluster.remove_service(self.cluster, agent.service)


def agent_service(the_cluster: cluster.Cluster, prefix: str, *, replicas: int,
                  node: str | None = None, constraints: tuple[str, ...] = (ON_WORKERS,)
                  ) -> Agent:
    """
    A demo agent's service (HTTP, /health and a WebSocket echo) on the workers (on
    C{node} only, if given), with C{replicas}; the caller removes it (L{Deployed.remove}).
    """
    name = engine.unique_name(prefix)
    cluster.create_service(the_cluster, name, node=node, constraints=constraints,
                           replicas=replicas, image=engine.DEMO_IMAGE,
                           target_port=engine.DEMO_PORT, stop_grace=2.0,
                           healthcheck=cluster.NO_HEALTHCHECK)
    return Agent(name=name.removeprefix("orchtest-"), service=name)


def deploy(the_cluster: cluster.Cluster, agents: dict[Agent, dict], *,
           image: str = ORCHESTRATOR_IMAGE) -> Deployed:
    """
    Deploy the orchestrator (its C{image}, loaded into the cluster's engines) on the
    manager for C{agents} (each with its own configuration keys: C{policy},
    C{replicas}, ...), and wait until its admin API answers.
    """
    lines = ["listen:", f'  proxy: "tcp:{PROXY_PORT}"', f'  admin: "tcp:{ADMIN_PORT}"',
             "docker:", '  url: "unix:///var/run/docker.sock"', "agents:"]
    for agent, keys in agents.items():
        lines += [f"  {agent.name}:",
                  f"    service: {agent.service}",
                  f'    backend: "http://tasks.{agent.service}:{engine.DEMO_PORT}"',
                  f'    hosts: ["{agent.host}"]',
                  "    startup_timeout: 90s",
                  "    health: {path: /health, interval: 1s, timeout: 1s, failures: 2}",
                  "    idle: {timeout: 10m}"]
        lines += [f"    {key}: {value}" for key, value in keys.items()]
    admin_port = engine.free_port()
    name = engine.unique_name("orchestrator")
    service = cluster.deploy_on_manager(
        the_cluster, name, image=image, config=("\n".join(lines) + "\n").encode(),
        target_port=PROXY_PORT, docker_socket=True,
        extra_ports={admin_port: ADMIN_PORT})
    deployed = Deployed(the_cluster, service, admin_port, tuple(agents))
    try:
        cluster.wait_for_task(the_cluster, name, node="manager", timeout=60)
        for agent in agents:
            cluster.wait_until(lambda agent=agent: _answers(deployed, agent), timeout=60,
                               interval=0.2)
    except BaseException:
        deployed.remove()
        raise
    return deployed


def _answers(deployed: Deployed, agent: Agent) -> dict:
    try:
        return deployed.agent_view(agent)
    except OSError as error:
        raise AssertionError(f"admin API not answering yet: {error}") from error


# The scenarios -----------------------------------------------------------------------


@attrs.frozen
class KillOutcome:
    #: Seconds from the kill to the agent seen degraded (the admin API polled every 50 ms).
    to_degraded: float
    #: ... to the agent seen ready again, Swarm having restarted the task.
    to_ready: float
    reason: str
    node: str


def kill_to_degraded(deployed: Deployed, agent: Agent) -> KillOutcome:
    """
    Kill the container of C{agent}'s task on its worker; time degraded, then ready.
    """
    deployed.wait_state(agent, "ready", timeout=90)
    [task] = deployed.tasks(agent)
    killed_at = cluster.kill_task_container(deployed.cluster, task)
    view, degraded_at = deployed.wait_state(agent, "degraded", timeout=30, interval=0.02)
    _, ready_at = deployed.wait_state(agent, "ready", timeout=60)
    return KillOutcome(to_degraded=degraded_at - killed_at, to_ready=ready_at - killed_at,
                       reason=view["reason"], node=task.node.name if task.node else "?")


@attrs.frozen
class DrainOutcome:
    drained: str
    to_degraded: float
    to_ready: float
    reason: str
    moved_to: str


def drain_and_recover(deployed: Deployed, agent: Agent, node: str) -> DrainOutcome:
    """
    Drain C{node}, where C{agent}'s one task runs (the caller activates it again); time
    degraded (naming the node), then ready with the task on another node.
    """
    deployed.wait_state(agent, "ready", timeout=90)
    drained_at = time.monotonic()
    cluster.drain(deployed.cluster, node)
    view, degraded_at = deployed.wait_state(agent, "degraded", timeout=30, interval=0.02)
    _, ready_at = deployed.wait_state(agent, "ready", timeout=90)
    [task] = deployed.tasks(agent)
    return DrainOutcome(drained=node, to_degraded=degraded_at - drained_at, to_ready=ready_at - drained_at,
                        reason=view["reason"], moved_to=task.node.name if task.node else "?")


@attrs.frozen
class LoopOutcome:
    requests: int
    failed: int
    #: What the failures were (status or error), a few.
    failures: tuple[str, ...]
    #: Answers by the task (hostname) that gave them.
    by_task: dict[str, int]
    seconds: float
    degraded_reason: str | None


def requests_through_a_kill(deployed: Deployed, agent: Agent, *, seconds: float = 8.0,
                            rate: float = 25.0) -> LoopOutcome:
    """
    With both of C{agent}'s replicas answering, send GETs at C{rate} a second for
    C{seconds} while the first task is killed a quarter of the way in; count what failed.
    """
    deployed.wait_state(agent, "ready", timeout=90)
    tasks = cluster.wait_until(lambda: _two_tasks(deployed, agent), timeout=90)
    by_hostname = {task.container_id[:12]: task for task in tasks if task.container_id}
    outcomes: list[tuple[bool, str]] = []
    stop = threading.Event()

    def loop() -> None:
        interval = 1.0 / rate
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            started = time.monotonic()
            try:
                status, body = deployed.get(agent, timeout=10)
            except OSError as error:
                outcomes.append((False, f"{type(error).__name__}: {error}"))
            else:
                ok = status == 200
                outcomes.append((ok, _hostname(body) if ok else f"HTTP {status}"))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    worker = threading.Thread(target=loop, name="request-loop", daemon=True)
    began = time.monotonic()
    worker.start()
    time.sleep(seconds / 4)
    # The task that answered last: the one the proxy's kept-alive connection is to.
    last = next((what for ok, what in reversed(outcomes) if ok), None)
    cluster.kill_task_container(deployed.cluster, by_hostname.get(last, tasks[0]))
    degraded = None
    try:
        view, _ = deployed.wait_state(agent, "degraded", timeout=seconds, interval=0.05)
        degraded = view["reason"]
    except AssertionError:
        degraded = None
    worker.join(timeout=seconds + 30)
    stop.set()
    by_task: dict[str, int] = {}
    for ok, what in outcomes:
        if ok:
            by_task[what] = by_task.get(what, 0) + 1
    failures = tuple(what for ok, what in outcomes if not ok)
    return LoopOutcome(requests=len(outcomes), failed=len(failures), failures=failures[:5],
                       by_task=by_task, seconds=time.monotonic() - began,
                       degraded_reason=degraded)


def _two_tasks(deployed: Deployed, agent: Agent) -> list[cluster.Task]:
    tasks = deployed.tasks(agent)
    assert len(tasks) == 2 and len({task.node for task in tasks}) == 2, tasks
    # Both answer through the proxy: concurrent requests open several backend
    # connections, each to the next address (a kept-alive one stays with its task).
    seen: set[str] = set()

    def one() -> None:
        status, body = deployed.get(agent)
        if status == 200:
            seen.add(_hostname(body))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert seen == {task.container_id[:12] for task in tasks}, f"only {seen} answered"
    return tasks


def _hostname(body: bytes) -> str:
    """
    The task that answered: the demo agent's page says "Hello from <hostname>".
    """
    text = body.decode(errors="replace")
    marker = "Hello from "
    start = text.find(marker)
    if start == -1:
        return "?"
    return text[start + len(marker):].split("<", 1)[0].split()[0].strip(".!")
