"""
The real Swarm failing under the orchestrator: a task killed mid-request, the engine's
API gone mid-wake (a socket proxy cut, or, with --restart-dockerd only, dockerd itself
restarted), and the orchestrator killed with SIGKILL and restarted by Swarm under a
request loop.

Everything it creates is named orchtest-rel-* and labelled orchtest (the integration
tests' sweep removes what a crashed run leaves), and is removed at the end; its images
have tags of their own (no shared tag is rebuilt or retagged).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import attrs
import docker
import docker.errors
from docker.types import EndpointSpec, Mount, RestartPolicy, ServiceMode

from bench.harness import REPO, Bench, BenchError, free_port
from bench.reliability.availability import start_orchestrator

PREFIX = "orchtest-rel-"
LABEL = {"orchtest": "1"}
SLOW_IMAGE = "orchestrator-test/httpd-slow:reliability"
ORCHESTRATOR_IMAGE = "orchestrator-test/orchestrator:reliability"
AGENT_IMAGE = "orchestrator-test/demo-agent:reliability"
HOST = "swarm.localhost"
_SLOW_CGI = "#!/bin/sh\nsleep 5\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n"


def engine() -> docker.DockerClient:
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=60)
    if client.info().get("Swarm", {}).get("LocalNodeState") != "active":
        raise BenchError("the Docker engine is not a swarm manager (dev/engine sets one up)")
    return client


def name(what: str) -> str:
    return f"{PREFIX}{what}-{secrets.token_hex(3)}"


def remove(client: docker.DockerClient, service: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_service(service)


def slow_image(client: docker.DockerClient) -> str:
    """
    The integration tests' busybox httpd with /cgi-bin/slow (answers after 5 s), under a
    tag of its own.
    """
    context = REPO / "tests" / "integration" / "images" / "httpd"
    with tempfile.TemporaryDirectory(prefix="orchtest-rel-image-") as directory:
        shutil.copytree(context, directory, dirs_exist_ok=True)
        shutil.copy2("/bin/busybox", Path(directory) / "busybox")
        slow = Path(directory) / "www" / "cgi-bin" / "slow"
        slow.write_text(_SLOW_CGI)
        slow.chmod(0o755)
        client.images.build(path=directory, tag=SLOW_IMAGE, rm=True)
    return SLOW_IMAGE


def agent_service(client, service: str, port: int, *, replicas: int) -> None:
    client.services.create(
        SLOW_IMAGE, name=service, labels=LABEL,
        mode=ServiceMode("replicated", replicas),
        endpoint_spec=EndpointSpec(mode="dnsrr", ports={port: (8080, "tcp", "host")}),
        stop_grace_period=1_000_000_000,
        restart_policy=RestartPolicy(condition="any", delay=1_000_000_000))


def running_tasks(client, service: str) -> list[dict]:
    return [task for task in client.api.tasks(filters={"service": service})
            if task["Status"]["State"] == "running" and task.get("DesiredState") == "running"]


def wait_running(client, service: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_tasks(client, service):
            return True
        time.sleep(0.2)
    return False


def request(port: int, path: str = "/", timeout: float = 10.0, host: str = HOST):
    """
    (status, JSON body or None, seconds), or (None, error, seconds).
    """
    began = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        body = response.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        return response.status, parsed, time.monotonic() - began
    except (OSError, http.client.HTTPException) as error:
        return None, type(error).__name__, time.monotonic() - began
    finally:
        connection.close()


def health(port: int, wait: float = 0, host: str = HOST) -> dict | None:
    status, body, _ = request(port, f"/api/health?wait={wait:g}", timeout=wait + 5, host=host)
    return body if status == 200 else None


# A task killed mid-request -------------------------------------------------------


@attrs.frozen
class KilledTask:
    status: int | None
    body: dict | str | None
    failures_after: int
    failure_statuses: dict[str, int]
    first_success_after: float | None
    task_back_after: float | None


def task_killed_mid_request(bench: Bench, client, *, tree) -> KilledTask:
    service, port = name("killed"), free_port()
    with bench.scope():
        try:
            agent_service(client, service, port, replicas=1)
            if not wait_running(client, service, 60):
                raise BenchError(f"{service} never ran")
            process, proxy_port, _, _ = start_orchestrator(
                bench, "orchestrator-killed", tree=tree, agents={"killed": {
                    "service": service, "backend": f"http://127.0.0.1:{port}", "hosts": [HOST],
                    "policy": "always_on", "health": {"path": "/health", "interval": "1s"}}})
            _wait_status(proxy_port, 200, 60)
            outcome: dict = {}

            def slow():
                outcome["answer"] = request(proxy_port, "/cgi-bin/slow", timeout=30)

            thread = threading.Thread(target=slow)
            thread.start()
            time.sleep(1)
            (task,) = running_tasks(client, service)
            container = task["Status"]["ContainerStatus"]["ContainerID"]
            killed_at, killed_wall = time.monotonic(), time.time()
            client.api.kill(container, signal="SIGKILL")
            thread.join(30)
            status, body, _ = outcome.get("answer", (None, "no answer", 0))
            failures, success_after = {}, None
            while time.monotonic() < killed_at + 60:
                code, _, _ = request(proxy_port, "/health", timeout=5)
                if code == 200:
                    success_after = time.monotonic() - killed_at
                    break
                failures[str(code)] = failures.get(str(code), 0) + 1
                time.sleep(0.1)
            # When Swarm's new task began to run, by its own clock (one machine).
            new = [t for t in running_tasks(client, service) if t["ID"] != task["ID"]]
            back_after = (_timestamp(new[0]["Status"]["Timestamp"]) - killed_wall) if new else None
            return KilledTask(status, body, sum(failures.values()), failures, success_after,
                              back_after)
        finally:
            remove(client, service)


def _timestamp(text: str) -> float:
    from datetime import datetime

    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))


def _wait_status(port: int, status: int, timeout: float, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request(port, path, timeout=5)[0] == status:
            return
        time.sleep(0.2)
    raise BenchError(f"the orchestrator on {port} never answered {status} for {path}")


# The engine's API gone mid-wake -----------------------------------------------------


class EngineSocketProxy:
    """
    A UNIX socket relaying to Docker's: the orchestrator's engine, which L{cut} makes
    unreachable (every connection dropped, new ones refused) until L{restore}.
    """

    def __init__(self, path: Path, target: str = "/var/run/docker.sock") -> None:
        self.path, self.target = path, target
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._writers: set = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> EngineSocketProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc_info) -> None:
        self.cut()

        async def settle():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(settle())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def restore(self) -> None:
        async def listen():
            self._server = await asyncio.start_unix_server(self._relay, str(self.path))
        self._call(listen())

    def cut(self) -> None:
        async def close():
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._call(close())

    async def _relay(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source, sink):
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@attrs.frozen
class WakeOutcome:
    how: str
    cut_seconds: float
    final_state: str | None
    reason: str | None
    settled_after: float | None
    slowest_health_answer: float
    unanswered_health: int
    next_request: int | None
    served_after: float | None
    restored: str = ""


def wake_with_engine_gone(bench: Bench, client, *, tree, real_restart: bool,
                          down_seconds: float = 10.0) -> WakeOutcome:
    """
    Wake an on-demand agent and take the engine away right after the scale-up was
    asked: the wake must end (ready, or degraded with a reason), health must keep
    answering, and a request once the engine is back must work.
    """
    service, port = name("wake"), free_port()
    proxy_path = bench.tmp / f"docker-{secrets.token_hex(3)}.sock"
    with bench.scope(), EngineSocketProxy(proxy_path) as engine_proxy:
        try:
            agent_service(client, service, port, replicas=0)
            docker_url = f"unix://{proxy_path}" if not real_restart else "unix:///var/run/docker.sock"
            process, proxy_port, _, _ = start_orchestrator(
                bench, "orchestrator-wake", tree=tree, agents={"wake": {
                    "service": service, "backend": f"http://127.0.0.1:{port}", "hosts": [HOST],
                    "startup_timeout": "60s", "health": {"path": "/health"}}},
                extra={"docker": {"url": docker_url, "timeout": "5s"}})
            _wait_state(proxy_port, "sleeping", 30)
            status, _, _ = request(proxy_port, "/")  # the wake begins
            if status != 503:
                raise BenchError(f"a request for the sleeping agent got {status}")
            _wait_replicas(client, service, 1, 10)
            began = time.monotonic()
            restored = ""
            if real_restart:
                restored = restart_dockerd(client, down_seconds)
                client = engine()
            else:
                engine_proxy.cut()
            slowest, unanswered, final, reason, settled = 0.0, 0, None, None, None
            deadline = began + 120
            while time.monotonic() < deadline and settled is None:
                if not real_restart and time.monotonic() - began >= down_seconds:
                    engine_proxy.restore()
                asked = time.monotonic()
                body = health(proxy_port, wait=2)
                slowest = max(slowest, time.monotonic() - asked)
                if body is None:
                    unanswered += 1
                elif body["status"] in ("ready", "degraded"):
                    final, reason = body["status"], body.get("reason")
                    settled = time.monotonic() - began
            if not real_restart:
                while time.monotonic() - began < down_seconds:
                    time.sleep(0.1)
                engine_proxy.restore()
            next_status, served_after = None, None
            while time.monotonic() < began + 180:
                next_status = request(proxy_port, "/health", timeout=5)[0]
                if next_status == 200:
                    served_after = time.monotonic() - began
                    break
                time.sleep(0.5)
            return WakeOutcome("dockerd restarted" if real_restart else "engine API cut",
                               down_seconds, final, reason, settled, slowest, unanswered,
                               next_status, served_after, restored)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                remove(client, service)


def _wait_state(port: int, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = health(port)
        if body and body["status"] == state:
            return
        time.sleep(0.2)
    raise BenchError(f"the agent never became {state}")


def _wait_replicas(client, service: str, replicas: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spec = client.api.inspect_service(service)["Spec"]["Mode"]["Replicated"]["Replicas"]
        if spec == replicas:
            return
        time.sleep(0.1)
    raise BenchError(f"{service} was never scaled to {replicas}")


def restart_dockerd(client, down_seconds: float) -> str:
    """
    Stop dockerd (as it runs here: a process started by hand, see ENVIRONMENT.md), wait
    C{down_seconds}, start it again with the same command line, and wait until it is a
    swarm manager again and every service that had running tasks has them again. Only
    with --restart-dockerd: every container on the engine stops meanwhile.
    """
    before = {s["Spec"]["Name"]: s for s in client.api.services()}
    had_tasks = [n for n in before if running_tasks(client, n)]
    pid = int(subprocess.run(["pgrep", "-xo", "dockerd"], capture_output=True, text=True,
                             check=True).stdout.split()[0])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(down_seconds)
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen([a.decode() for a in argv], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            fresh = engine()
            back = [n for n in had_tasks if running_tasks(fresh, n)]
            if len(back) == len(had_tasks):
                return f"dockerd back; {len(back)} of {len(had_tasks)} services running again"
        time.sleep(1)
    return f"dockerd back, but not every service ran again within 120 s ({had_tasks})"


# The orchestrator killed and restarted by Swarm ------------------------------------


@attrs.frozen
class KilledOrchestrator:
    requests: int
    failed: int
    outage_seconds: float | None
    restarted_after: float | None
    agent_state_after: str | None
    woken_again: bool


def build_images() -> None:
    """
    The orchestrator's image from this tree, under tags of its own (deploy/images/build
    with ORCHESTRATOR_IMAGE and DEMO_AGENT_IMAGE set).
    """
    env = {**os.environ, "ORCHESTRATOR_IMAGE": ORCHESTRATOR_IMAGE,
           "DEMO_AGENT_IMAGE": AGENT_IMAGE}
    done = subprocess.run([str(REPO / "deploy" / "images" / "build")], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise BenchError(f"deploy/images/build failed:\n{done.stderr[-2000:]}")


def orchestrator_killed(bench: Bench, client, *, seconds: float = 40.0) -> KilledOrchestrator:
    """
    The orchestrator as a Swarm service (host network, the stack's 256 MiB limit), an
    awake on-demand agent, a request loop; the orchestrator's container is killed with
    SIGKILL and Swarm restarts it. The agent must come back ready, not be woken again.
    """
    build_images()
    agent, orchestrator = name("agent"), name("orchestrator")
    agent_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    state = bench.tmp / f"state-{secrets.token_hex(3)}"
    state.mkdir()
    os.chmod(state, 0o755)
    config = {
        "listen": {"proxy": f"tcp:{proxy_port}:interface=127.0.0.1",
                   "admin": f"tcp:{admin_port}:interface=127.0.0.1"},
        "shutdown": {"drain_timeout": "2s"},
        "agents": {"kept": {"service": agent, "backend": f"http://127.0.0.1:{agent_port}",
                            "hosts": [HOST], "health": {"path": "/health"}}},
    }
    (state / "orchestrator.yaml").write_text(json.dumps(config))
    gid = os.stat("/var/run/docker.sock").st_gid
    try:
        agent_service(client, agent, agent_port, replicas=0)
        client.services.create(
            ORCHESTRATOR_IMAGE, name=orchestrator, labels=LABEL, user=f"10001:{gid}",
            networks=["host"],
            args=None,
            command=["twistd", "-n", "--pidfile=", "orchestrator", "--config",
                     "/state/orchestrator.yaml"],
            mounts=[Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind"),
                    Mount("/state", str(state), type="bind")],
            resources=docker.types.Resources(mem_limit=256 * 1024 * 1024),
            # The image's check asks port 9090; this one's admin port is another.
            healthcheck=docker.types.Healthcheck(
                test=["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen("
                      f"'http://127.0.0.1:{admin_port}/healthz', timeout=2)"],
                interval=2_000_000_000, timeout=2_000_000_000, retries=3),
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            stop_grace_period=5_000_000_000, mode=ServiceMode("replicated", 1))
        _wait_state(proxy_port, "sleeping", 120)
        request(proxy_port, "/")  # wake it
        _wait_state(proxy_port, "ready", 60)
        results: list[tuple[float, int | None]] = []
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                began = time.monotonic()
                status = request(proxy_port, "/health", timeout=2)[0]
                results.append((began, status))
                stop.wait(max(0.0, 0.05 - (time.monotonic() - began)))

        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(3)
        (task,) = running_tasks(client, orchestrator)
        killed_at = time.monotonic()
        client.api.kill(task["Status"]["ContainerStatus"]["ContainerID"], signal="SIGKILL")
        restarted = None
        while time.monotonic() < killed_at + seconds:
            if restarted is None and any(t["ID"] != task["ID"] for t in running_tasks(client, orchestrator)):
                restarted = time.monotonic() - killed_at
            time.sleep(0.2)
        stop.set()
        thread.join(10)
        failed = [at for at, status in results if status != 200]
        after = health(proxy_port)
        logs = b"".join(client.api.logs(t["Status"]["ContainerStatus"]["ContainerID"], stdout=True,
                                        stderr=True) for t in running_tasks(client, orchestrator))
        return KilledOrchestrator(
            requests=len(results), failed=len(failed),
            outage_seconds=(max(failed) - min(failed) + 0.05) if failed else 0.0,
            restarted_after=restarted, agent_state_after=after and after["status"],
            woken_again=b"agent.wake" in logs)
    finally:
        remove(client, orchestrator)
        remove(client, agent)
