"""
Test support for a real Swarm of several nodes on this one machine: the cluster that
C{dev/cluster} makes (a manager and two workers, each its own dockerd in its own network
namespace, joined by the attachable overlay network L{NETWORK}; docs/multinode.md).

Usage, in a trial test::

    def setUp(self):
        self.cluster = cluster.cluster_or_skip()

    def test_something(self):
        name = engine.unique_name("web")
        cluster.create_service(self.cluster, name, node="worker1")
        self.addCleanup(cluster.remove_service, self.cluster, name)
        task = cluster.wait_for_task(self.cluster, name, node="worker1")

The helpers block, as the Docker SDK does: a test that runs the orchestrator on the
reactor calls them with C{deferToThread}. Names and cleanup are L{engine}'s: services,
configs and containers are called C{orchtest-...}, carry its label, are removed by the
test that made them, and are swept an hour later if a crashed run left them.

Where the cluster cannot come up (not root, a kernel without network namespaces, no host
engine to take the images from, ...) the tests skip, saying why; with C{CI} set they fail
instead. A kernel without ESP cannot encrypt the overlay between nodes: the cluster then
comes up with a plain overlay and says so loudly; the encryption test then checks that
C{dev/cluster check} names the missing feature and refuses, as C{up} does by default.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
import unittest
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import attrs
import docker
import docker.errors
from docker.types import ConfigReference, EndpointSpec, Healthcheck, Mount, RestartPolicy

from . import engine

_T = TypeVar("_T")

CLUSTER_SCRIPT = Path(__file__).parents[2] / "dev" / "cluster"
#: The overlay network every node is on (attachable, so `docker run` can join it too).
NETWORK = "orchc-agents"
#: Swarm's name for node C{worker1} is C{orchc-worker1}: each dockerd has its own hostname.
HOSTNAME_PREFIX = "orchc-"
#: Where a node's own engine answers, inside the node: as on a real machine.
NODE_DOCKER_SOCKET = "/var/run/docker.sock"
#: Where the manager's socket is on this machine (its group is the nodes' docker group).
MANAGER_SOCKET_ON_HOST = Path("/run/orchestrator-cluster/manager/docker.sock")
#: Bring-up from scratch takes about 20 s here; this bounds a slow machine.
UP_TIMEOUT = 300
#: Task states after which a task never runs again.
FINISHED_STATES = frozenset(
    {"complete", "shutdown", "failed", "rejected", "orphaned", "remove"}
)
_NANOSECONDS = 1_000_000_000
#: For a service whose image has a health check that does not fit what it runs.
NO_HEALTHCHECK = Healthcheck(test=["NONE"])


class ClusterUnavailable(Exception):
    """
    The cluster cannot come up while C{CI} is set: the tests must fail, not skip.
    """


@attrs.frozen
class Node:
    """
    One node of the cluster, as C{dev/cluster} names it and as Swarm knows it.
    """

    #: C{dev/cluster}'s name: C{manager}, C{worker1}, C{worker2}.
    name: str
    #: Swarm's node name (C{node.hostname} in placement constraints).
    hostname: str
    node_id: str
    #: The node's address on the cluster's bridge, reachable from this machine.
    address: str
    #: Its engine's socket, as C{DOCKER_HOST}.
    docker_host: str

    @property
    def netns(self) -> str:
        """
        The node's network namespace (C{ip -n <netns> ...} looks inside it).
        """
        return f"{HOSTNAME_PREFIX}{self.name}"


@attrs.frozen
class Cluster:
    """
    The running cluster: its nodes, a client for each, and its overlay network.
    """

    nodes: tuple[Node, ...]
    network: str
    #: Whether Docker encrypts the overlay between nodes (IPsec); see L{unencrypted_reason}.
    encrypted: bool
    #: Why not, when not: the line of C{dev/cluster check} that says which feature is missing.
    unencrypted_reason: str | None
    clients: Mapping[str, docker.DockerClient] = attrs.field(eq=False, repr=False)

    @property
    def manager(self) -> Node:
        return self.node("manager")

    @property
    def workers(self) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if node.name != "manager")

    def node(self, name: str | Node) -> Node:
        """
        The node called C{name} (C{"worker1"}), or C{name} itself if it is a L{Node}.
        """
        if isinstance(name, Node):
            return name
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in the cluster ({[n.name for n in self.nodes]})")

    def node_by_id(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node with id {node_id!r} in the cluster")

    def client(self, node: str | Node = "manager") -> docker.DockerClient:
        """
        A Docker client for C{node}'s own engine (the manager's by default).
        """
        return self.clients[self.node(node).name]


@attrs.frozen
class Task:
    """
    One task of a service, as the manager reports it.
    """

    id: str
    service: str
    #: The node it was given to; None while unassigned.
    node: Node | None
    #: Swarm's status: C{new}, ..., C{running}, C{failed}, C{shutdown}, ...
    state: str
    desired_state: str
    #: Its container on that node, once it has one.
    container_id: str | None
    #: Its address on L{NETWORK}, if attached.
    address: str | None
    #: Swarm's message for the state (the container's exit, a scheduling problem).
    error: str | None


@attrs.frozen
class ManagerService:
    """
    A service running on the manager, with a Docker config and a port published in host
    mode, as the orchestrator will be deployed.
    """

    name: str
    config_name: str | None
    #: Published port on the manager node, reached through the manager's address.
    port: int
    #: C{http://<manager address>:<port>}
    url: str


_cluster: Cluster | None = None
_cluster_problem: str | None = None


def cluster_or_skip() -> Cluster:
    """
    The cluster, brought up with C{dev/cluster up} once per process (a fast no-op when it
    already is), with the test image loaded into every node and leftovers swept.

    @raise unittest.SkipTest: it cannot come up, outside CI.
    @raise ClusterUnavailable: it cannot come up, and C{CI} is set.
    """
    global _cluster, _cluster_problem
    if _cluster is None and _cluster_problem is None:
        try:
            _cluster = _bring_up()
        except (unittest.SkipTest, engine.EngineUnavailable) as no_engine:
            _cluster_problem = f"no host engine to take the images from: {no_engine}"
        except Exception as problem:
            _cluster_problem = str(problem)
        else:
            sweep_leftovers(_cluster)
            if not _cluster.encrypted:
                report(f"WARNING: the cluster's overlay {_cluster.network} is NOT "
                       f"encrypted between nodes here: {_cluster.unencrypted_reason}")
    if _cluster is not None:
        return _cluster
    reason = f"no multi-node cluster (dev/cluster up): {_cluster_problem}"
    if engine.in_ci():
        raise ClusterUnavailable(f"{reason}; CI is set, so the cluster tests must run")
    raise unittest.SkipTest(reason)


def _bring_up() -> Cluster:
    if not CLUSTER_SCRIPT.exists():
        raise RuntimeError(f"{CLUSTER_SCRIPT} is missing")
    host = engine.engine_or_skip()
    engine.ensure_test_image(host)
    started = time.monotonic()
    _script("up", CLUSTER_ENCRYPTION="auto")
    _script("load", engine.TEST_IMAGE)
    report(f"up (dev/cluster up, then load) in {time.monotonic() - started:.1f} s")
    clients = {}
    nodes = []
    manager_client = _client(_docker_host("manager"))
    clients["manager"] = manager_client
    for entry in manager_client.api.nodes():
        hostname = entry["Description"]["Hostname"]
        if not hostname.startswith(HOSTNAME_PREFIX):
            continue
        name = hostname[len(HOSTNAME_PREFIX):]
        docker_host = _docker_host(name)
        if name not in clients:
            clients[name] = _client(docker_host)
        nodes.append(Node(name=name, hostname=hostname, node_id=entry["ID"],
                          address=entry["Status"]["Addr"], docker_host=docker_host))
    nodes.sort(key=lambda node: (node.name != "manager", node.name))
    network = manager_client.api.inspect_network(NETWORK)
    encrypted = "encrypted" in (network.get("Options") or {})
    reason = None
    if not encrypted:
        checked = _script("check", CLUSTER_ENCRYPTION="auto", check=False).stdout
        reason = "; ".join(line.strip().removeprefix("absent").strip()
                           for line in checked.splitlines()
                           if line.strip().startswith("absent")) or "see dev/cluster check"
    return Cluster(nodes=tuple(nodes), network=NETWORK, encrypted=encrypted,
                   unencrypted_reason=reason, clients=clients)


def _script(*arguments: str, check: bool = True, **environment: str):
    done = subprocess.run(
        [str(CLUSTER_SCRIPT), *arguments], capture_output=True, text=True,
        timeout=UP_TIMEOUT,
        env={**os.environ, "CLUSTER_IMAGE_SOURCE": engine.engine_url(), **environment})
    if check and done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()
        raise RuntimeError(f"dev/cluster {' '.join(arguments)} exited with "
                           f"{done.returncode}: " + " | ".join(said[-12:]))
    return done


def _docker_host(node: str) -> str:
    said = _script("env", node).stdout.strip()
    return said.removeprefix("export ").removeprefix("DOCKER_HOST=")


def _client(docker_host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=docker_host, timeout=30, version="auto")


def report(message: str) -> None:
    """
    Print a measurement or a warning for whoever reads the test run (on stderr, which
    trial leaves alone), prefixed "cluster:".
    """
    print(f"cluster: {message}", file=sys.stderr, flush=True)


# --- services and tasks ---------------------------------------------------------------

def placement_on(cluster: Cluster, node: str | Node) -> str:
    """
    The placement constraint that puts a service's tasks on C{node} only.
    """
    return f"node.hostname=={cluster.node(node).hostname}"


def create_service(
    cluster: Cluster,
    name: str,
    *,
    node: str | Node | None = None,
    constraints: tuple[str, ...] = (),
    replicas: int = 1,
    image: str = engine.TEST_IMAGE,
    command: list[str] | None = None,
    port: int | None = None,
    target_port: int = engine.TEST_IMAGE_PORT,
    extra_ports: dict[int, int] | None = None,
    networks: tuple[str, ...] = (NETWORK,),
    labels: dict[str, str] | None = None,
    configs: list[ConfigReference] | None = None,
    mounts: list[Mount] | None = None,
    env: dict[str, str] | None = None,
    groups: list[str] | None = None,
    healthcheck: Healthcheck | None = None,
    restart_delay: float = 0.5,
    stop_grace: float = 1.0,
):
    """
    Create a test service through the manager: on C{node} only if given (else wherever
    C{constraints} allow), attached to the cluster's overlay, endpoint mode C{dnsrr}
    (no IPVS here), restarted C{restart_delay} after a task dies; C{port} publishes
    C{target_port} there in host mode on the node that runs the task (and each of
    C{extra_ports}, published port -> target port, likewise). C{healthcheck}
    replaces the image's (C{NO_HEALTHCHECK} turns it off). The caller registers
    L{remove_service} as a cleanup.
    """
    if node is not None:
        constraints = (placement_on(cluster, node), *constraints)
    ports = {port: (target_port, "tcp", "host")} if port is not None else {}
    ports.update({published: (target, "tcp", "host")
                  for published, target in (extra_ports or {}).items()})
    return cluster.client().services.create(
        image,
        command=command,
        name=name,
        mode=docker.types.ServiceMode("replicated", replicas),
        labels={engine.TEST_LABEL: "1", **(labels or {})},
        container_labels={engine.TEST_LABEL: "1"},
        endpoint_spec=EndpointSpec(mode="dnsrr", ports=ports or None),
        networks=list(networks),
        constraints=list(constraints),
        restart_policy=RestartPolicy(condition="any",
                                     delay=int(restart_delay * _NANOSECONDS)),
        stop_grace_period=int(stop_grace * _NANOSECONDS),
        configs=configs,
        mounts=mounts,
        env=[f"{key}={value}" for key, value in (env or {}).items()],
        groups=groups,
        healthcheck=healthcheck,
    )


def remove_service(cluster: Cluster, name: str) -> None:
    """
    Remove a test service if it is still there (its containers stop in the background).
    """
    engine.remove_service(cluster.client(), name)


def tasks(cluster: Cluster, service: str) -> list[Task]:
    """
    Every task of C{service} the manager knows of (history included), newest first.
    """
    found = cluster.client().api.tasks(filters={"service": service})
    found.sort(key=lambda entry: entry["CreatedAt"], reverse=True)
    return [_task(cluster, service, entry) for entry in found]


def _task(cluster: Cluster, service: str, entry: dict) -> Task:
    status = entry.get("Status") or {}
    node = None
    if entry.get("NodeID"):
        try:
            node = cluster.node_by_id(entry["NodeID"])
        except KeyError:
            node = None
    address = None
    for attachment in entry.get("NetworksAttachments") or ():
        if attachment["Network"]["Spec"]["Name"] == NETWORK and attachment.get("Addresses"):
            address = attachment["Addresses"][0].split("/")[0]
    return Task(
        id=entry["ID"],
        service=service,
        node=node,
        state=status.get("State", "unknown"),
        desired_state=entry.get("DesiredState", "unknown"),
        container_id=(status.get("ContainerStatus") or {}).get("ContainerID") or None,
        address=address,
        error=status.get("Err") or None,
    )


def wait_for_task(
    cluster: Cluster,
    service: str,
    *,
    node: str | Node | None = None,
    other_than: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> Task:
    """
    Wait for a running task of C{service} (on C{node}, if given; not one of the task
    ids C{other_than}) and return it.
    """
    wanted = cluster.node(node) if node is not None else None

    def running() -> Task:
        current = tasks(cluster, service)
        for task in current:
            if (task.state == "running" and task.desired_state == "running"
                    and task.id not in other_than
                    and (wanted is None or task.node == wanted)):
                return task
        where = f" on {wanted.name}" if wanted else ""
        raise AssertionError(
            f"no running task of {service}{where} yet: "
            + ", ".join(f"{t.id[:8]} {t.state} on {t.node.name if t.node else '-'}"
                        f"{' (' + t.error + ')' if t.error else ''}" for t in current[:4]))

    return wait_until(running, timeout=timeout)


def task_state(cluster: Cluster, task: Task) -> Task:
    """
    C{task} as the manager reports it now.
    """
    entry = cluster.client().api.inspect_task(task.id)
    return _task(cluster, task.service, entry)


def kill_task_container(cluster: Cluster, task: Task) -> float:
    """
    Kill C{task}'s container (SIGKILL) on the node that runs it, through that node's own
    engine, as a crash would; return C{time.monotonic()} just before the kill.
    """
    if task.node is None or task.container_id is None:
        raise ValueError(f"task {task.id} has no container on a node yet ({task.state})")
    client = cluster.client(task.node)
    killed_at = time.monotonic()
    client.api.kill(task.container_id)
    return killed_at


# --- nodes ---------------------------------------------------------------------------

def set_availability(cluster: Cluster, node: str | Node, availability: str) -> None:
    """
    Set C{node}'s availability: C{active}, C{pause} (no new tasks) or C{drain} (its tasks
    move elsewhere). The cluster is shared by every test on this machine: a test that
    changes it registers L{activate} as a cleanup.
    """
    target = cluster.node(node)
    api = cluster.client().api
    for _ in range(5):
        spec = api.inspect_node(target.node_id)
        if spec["Spec"].get("Availability") == availability:
            return
        wanted = {**spec["Spec"], "Availability": availability}
        try:
            api.update_node(target.node_id, spec["Version"]["Index"], wanted)
            return
        except docker.errors.APIError as conflict:
            # Another update (a label, a status) came in between: read and try again.
            if "update out of sequence" not in str(conflict):
                raise
    raise RuntimeError(f"could not set {target.name} to {availability}: updates kept racing")


def drain(cluster: Cluster, node: str | Node) -> None:
    """
    Drain C{node}: Swarm stops its tasks and schedules them on other nodes.
    """
    set_availability(cluster, node, "drain")


def activate(cluster: Cluster, node: str | Node) -> None:
    """
    Make C{node} active again (the state every test leaves every node in).
    """
    set_availability(cluster, node, "active")


# --- containers and the manager ------------------------------------------------------

def run_container(cluster: Cluster, node: str | Node, command: list[str], *,
                  image: str = engine.TEST_IMAGE, network: str | None = NETWORK,
                  timeout: float = 30.0) -> str:
    """
    Run a one-off container on C{node} (attached to the overlay by default), wait for it
    to exit and return its output; an exit status other than 0 raises C{AssertionError}
    with the output. To reach services over the overlay, L{exec_on_overlay} is faster
    and closer to how the orchestrator does it.
    """
    client = cluster.client(node)
    container = _start_container(client, image, command, network)
    try:
        status = container.wait(timeout=timeout)
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    if status.get("StatusCode") != 0:
        raise AssertionError(f"{command!r} on {cluster.node(node).name} exited with "
                             f"{status.get('StatusCode')}: {output!r}")
    return output


def _start_container(client: docker.DockerClient, image: str, command: list[str],
                     network: str | None, prefix: str = "run"):
    container = client.containers.create(
        image, command, name=engine.unique_name(prefix), network=network,
        labels={engine.TEST_LABEL: "1"})
    deadline = time.monotonic() + 60
    while True:
        try:
            container.start()
            return container
        except docker.errors.APIError as error:
            # Attaching to an attachable overlay races with the node leaving it (when
            # the node's last container on it has just gone): "network ... not found",
            # or "attaching to network failed". Starting again joins it afresh.
            if "network" not in str(error) or time.monotonic() >= deadline:
                container.remove(force=True)
                raise
            time.sleep(0.5)


#: At most how long a prober lives, should this process die without removing it.
PROBER_LIFETIME = 3600
_probers: dict[str, str] = {}


def exec_on_overlay(cluster: Cluster, node: str | Node, command: list[str], *,
                    timeout: float = 30.0) -> str:
    """
    Run C{command} (bounded by C{timeout}) in this process's prober on C{node}, a
    container that stays attached to the overlay for the whole run, and return its
    output; an exit status other than 0 raises C{AssertionError} with the output.

    Why one that stays: a node joins an overlay network with its first container on it
    and leaves with its last, so one-off containers would have the node join and leave
    around every call, racing Docker's own cleanup; and the orchestrator, the one that
    will reach the agents, stays attached on the manager.
    """
    target = cluster.node(node)
    prober = _prober(cluster, target)
    result = prober.exec_run(["timeout", str(int(timeout)), *command])
    output = result.output.decode(errors="replace")
    if result.exit_code != 0:
        raise AssertionError(f"{command!r} on {target.name} exited with "
                             f"{result.exit_code}: {output!r}")
    return output


def _prober(cluster: Cluster, node: Node):
    client = cluster.client(node)
    known = _probers.get(node.name)
    if known is not None:
        try:
            container = client.containers.get(known)
            if container.status == "running":
                return container
        except docker.errors.NotFound:
            pass
    container = _start_container(client, engine.TEST_IMAGE,
                                 ["sleep", str(PROBER_LIFETIME)], NETWORK, "prober")
    _probers[node.name] = container.id
    atexit.register(_remove_quietly, client, container.id)
    return container


def _remove_quietly(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True)
    except docker.errors.APIError:
        pass


def http_over_overlay(cluster: Cluster, node: str | Node, host: str, port: int,
                      path: str = "/", *, wait: float = 5.0) -> str:
    """
    An HTTP/1.0 GET to C{host:port} (e.g. C{tasks.<service>}) from C{node}'s prober,
    over the overlay network, waiting at most C{wait} seconds for the answer; the raw
    response. No answer raises C{AssertionError}.
    """
    request = f"GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"
    # busybox: its wget crashes here; nc -w bounds the wait for an answer.
    response = exec_on_overlay(cluster, node, [
        "sh", "-c", f"printf '{request}' | nc -w {max(1, round(wait))} {host} {port}"])
    if not response.startswith("HTTP/1."):
        raise AssertionError(f"no HTTP answer from {host}:{port}: {response!r}")
    return response


def first_answer(cluster: Cluster, node: str | Node, host: str, port: int,
                 path: str = "/", *, timeout: float = 30.0) -> tuple[str, float]:
    """
    Ask C{host:port} over the overlay from C{node} every second until it answers, and
    return the answer and how long that took. A task just started on another node can
    take a moment to be reachable: its node may have only now joined the overlay, and
    the other nodes learn of it by gossip.
    """
    started = time.monotonic()
    response = wait_until(
        lambda: http_over_overlay(cluster, node, host, port, path, wait=1),
        timeout=timeout, interval=0.1)
    return response, time.monotonic() - started


def deploy_on_manager(
    cluster: Cluster,
    name: str,
    *,
    image: str = engine.TEST_IMAGE,
    command: list[str] | None = None,
    config: bytes | None = None,
    config_target: str = "/etc/orchestrator/orchestrator.yaml",
    port: int | None = None,
    target_port: int = 8080,
    extra_ports: dict[int, int] | None = None,
    docker_socket: bool = False,
    env: dict[str, str] | None = None,
    healthcheck: Healthcheck | None = None,
) -> ManagerService:
    """
    Run a service on the manager as the orchestrator will run: C{config} (a file's
    bytes) as the Docker config C{<name>-config} at C{config_target}; C{target_port}
    published in host mode on C{port} (a free one if not given), so that
    C{http://<manager address>:<port>} reaches it from this machine; with
    C{docker_socket}, the manager's engine mounted at C{/var/run/docker.sock} (inside a
    node that path is the node's own engine) with the socket's group added, so that the
    image's own user can use it; C{extra_ports} (published -> target) published
    likewise. The caller registers L{remove_from_manager}.
    """
    api = cluster.client().api
    config_name = None
    configs = None
    if config is not None:
        config_name = f"{name}-config"
        config_id = api.create_config(config_name, config, labels={engine.TEST_LABEL: "1"})
        if isinstance(config_id, dict):
            config_id = config_id["ID"]
        configs = [ConfigReference(config_id, config_name, filename=config_target,
                                   mode=0o444)]
    mounts = None
    groups = None
    if docker_socket:
        mounts = [Mount(target=NODE_DOCKER_SOCKET, source=NODE_DOCKER_SOCKET, type="bind")]
        groups = [str(MANAGER_SOCKET_ON_HOST.stat().st_gid)]
    port = port if port is not None else engine.free_port()
    try:
        create_service(cluster, name, constraints=("node.role==manager",), image=image,
                       command=command, port=port, target_port=target_port,
                       extra_ports=extra_ports, configs=configs, mounts=mounts, env=env, groups=groups,
                       healthcheck=healthcheck)
    except Exception:
        if config_name is not None:
            _remove_config(cluster, config_name)
        raise
    return ManagerService(name=name, config_name=config_name, port=port,
                          url=f"http://{cluster.manager.address}:{port}")


def remove_from_manager(cluster: Cluster, deployed: ManagerService) -> None:
    """
    Remove a service made by L{deploy_on_manager}, then its config.
    """
    remove_service(cluster, deployed.name)
    if deployed.config_name is not None:
        _remove_config(cluster, deployed.config_name)


def _remove_config(cluster: Cluster, name: str) -> None:
    api = cluster.client().api
    deadline = time.monotonic() + 30
    while True:
        try:
            api.remove_config(name)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            # Still in use by the service being removed: it goes in a moment.
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def sweep_leftovers(cluster: Cluster, older_than=engine.LEFTOVER_AGE) -> None:
    """
    Remove what crashed runs left on the cluster: test services and configs on the
    manager, one-off test containers on every node, older than C{older_than}.
    """
    engine.sweep_leftovers(cluster.client(), older_than)
    cutoff = datetime.now(UTC) - older_than
    api = cluster.client().api
    for config in api.configs(filters={"label": engine.TEST_LABEL}):
        if datetime.fromisoformat(config["CreatedAt"]) < cutoff:
            try:
                api.remove_config(config["ID"])
            except docker.errors.APIError:
                pass  # a service still uses it: swept with the service next time
    for node in cluster.nodes:
        for container in cluster.client(node).api.containers(
                all=True, filters={"label": engine.TEST_LABEL}):
            created = datetime.fromtimestamp(container["Created"], UTC)
            if created < cutoff and not container["Names"][0].lstrip("/").count("."):
                # Named "<service>.<slot>.<task>": a task's, which Swarm removes itself.
                cluster.client(node).api.remove_container(container["Id"], force=True)


def wait_until(check: Callable[[], _T], *, timeout: float = 30.0,
               interval: float = 0.1) -> _T:
    """
    Call C{check} until it returns instead of raising C{AssertionError}, and return what
    it returned; after C{timeout} seconds, raise its last C{AssertionError}. The
    blocking counterpart of L{engine.poll_until}, for integration tests only.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)
