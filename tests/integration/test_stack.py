"""
The whole stack, for real: deploy/stack.yaml deployed with `docker stack deploy` under a
stack name of its own, on a free port (PROXY_PORT), with a small override (a short idle
timeout, test secrets), exercised through the published port only, then removed. It runs
beside the demo (`deploy/demo up`), which keeps port 8080. And the systemd unit, verified.
"""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.helpers import inline

from . import engine

REPO = Path(__file__).resolve().parents[2]
IMAGES = ("orchestrator/orchestrator:dev", "orchestrator/demo-agent:dev")
IDLE_TIMEOUT = 6


def http_get(port: int, host: str, path: str = "/", timeout: float = 10):
    """
    A plain HTTP/1.1 GET to 127.0.0.1:C{port} with C{Host: host} (blocking; run it in a
    thread). Returns (status, body).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                           .encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        # Until the container listens, Docker's port proxy accepts the connection and
        # closes it without a word: the proxy is not answering yet.
        raise ConnectionError(f"no HTTP response on port {port}: {data[:80]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            if int(size, 16) == 0:
                break
            decoded, rest = decoded + rest[: int(size, 16)], rest[int(size, 16) + 2:]
        body = decoded
    return int(status_line[1]), body


def websocket_echo(port: int, host: str, message: str) -> str:
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with connect(f"ws://{host}:{port}/ws", sock=sock, open_timeout=10) as websocket:
        websocket.send(message)
        return websocket.recv(timeout=10)


class StackTests(TestCase):
    timeout = 300

    def setUp(self):
        self.client = engine.engine_or_skip()
        for image in IMAGES:
            try:
                self.client.images.get(image)
            except Exception:
                reason = f"image {image} is missing: run deploy/images/build (dev/test does)"
                if engine.in_ci():
                    raise AssertionError(reason) from None
                raise SkipTest(reason) from None
        self.stack = engine.unique_name("stack").replace("-", "")
        self.port = engine.free_port()
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.addCleanup(self.remove_stack)
        self.deploy()

    def deploy(self) -> None:
        """
        deploy/stack.yaml as it is, with an override for what a test must change.
        """
        config = yaml.safe_load((REPO / "deploy" / "orchestrator.stack.yaml").read_text())
        for name, agent in config["agents"].items():
            agent["service"] = f"{self.stack}_{name}"
            agent["idle"] = {"timeout": f"{IDLE_TIMEOUT}s", "drain_timeout": "1s"}
        (self.directory / "orchestrator.yaml").write_text(yaml.safe_dump(config))
        (self.directory / "admin_token").write_text("test-admin-token-" + self.stack)
        (self.directory / "webhook_url").write_text("http://127.0.0.1:9/unused")
        override = {
            "version": "3.8",
            "configs": {"orchestrator_config": {
                "name": f"{self.stack}_config",
                "file": str(self.directory / "orchestrator.yaml")}},
            "secrets": {
                "admin_token": {"name": f"{self.stack}_admin_token",
                                "file": str(self.directory / "admin_token")},
                "webhook_url": {"name": f"{self.stack}_webhook_url",
                                "file": str(self.directory / "webhook_url")}},
        }
        (self.directory / "override.yaml").write_text(yaml.safe_dump(override))
        # The port by variable, not by override: an override's ports are added to the
        # file's, and the file's 8080 belongs to the demo when it is up.
        environment = {**os.environ,
                       "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
                       "PROXY_PORT": str(self.port)}
        done = subprocess.run(
            ["docker", "stack", "deploy", "--resolve-image", "never",
             "-c", str(REPO / "deploy" / "stack.yaml"), "-c", str(self.directory / "override.yaml"),
             self.stack],
            capture_output=True, text=True, env=environment, timeout=120)
        self.assertEqual(done.returncode, 0, f"docker stack deploy failed: {done.stderr}")

    def remove_stack(self) -> Deferred:
        def remove():
            subprocess.run(["docker", "stack", "rm", self.stack], capture_output=True, timeout=60)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                services = self.client.services.list(filters={"label": f"com.docker.stack.namespace={self.stack}"})
                networks = self.client.networks.list(names=[f"{self.stack}_agents"])
                if not services and not networks:
                    return
                time.sleep(1)

        return deferToThread(remove)

    def replicas(self, service: str) -> int:
        spec = self.client.api.inspect_service(f"{self.stack}_{service}")["Spec"]
        return spec["Mode"]["Replicated"]["Replicas"]

    async def health(self, host: str) -> str:
        status, body = await deferToThread(http_get, self.port, host, "/api/health")
        assert status == 200, (status, body)
        return json.loads(body)["status"]

    async def until_state(self, host: str, state: str, timeout: float) -> None:
        async def reached():
            try:
                current = await self.health(host)
            except OSError as error:
                raise AssertionError(f"the proxy does not answer yet: {error}") from None
            assert current == state, current

        await engine.poll_until(reached, reactor, timeout=timeout, interval=0.5)

    def published_ports(self) -> list[int]:
        """
        The host ports of every service of this stack.
        """
        services = self.client.api.services(
            filters={"label": f"com.docker.stack.namespace={self.stack}"})
        return sorted(port["PublishedPort"] for service in services
                      for port in (service["Spec"].get("EndpointSpec") or {}).get("Ports", []))

    def test_publishes_only_its_own_port_so_it_runs_beside_the_demo(self):
        self.assertEqual(self.published_ports(), [self.port])

    @inline
    async def test_cold_start_websocket_idle_sleep_and_isolation_through_the_published_port(self):
        # The orchestrator comes up and finds the on-demand agents asleep.
        await self.until_state("demo.localhost", "sleeping", timeout=120)

        status, body = await deferToThread(http_get, self.port, "demo.localhost", "/")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["status"], "starting")
        await self.until_state("demo.localhost", "ready", timeout=90)
        status, body = await deferToThread(http_get, self.port, "demo.localhost", "/")
        self.assertEqual(status, 200)
        self.assertIn(b"Hello from", body)

        echoed = await deferToThread(websocket_echo, self.port, "demo.localhost", "ping over the overlay")
        self.assertEqual(echoed, "ping over the overlay")

        # Idle: back to 0 replicas.
        await self.until_state("demo.localhost", "sleeping", timeout=IDLE_TIMEOUT + 60)
        self.assertEqual(self.replicas("demo"), 0)

        # DutyBound: Mission Control (8081) is reachable on the overlay, the gateway
        # (18800, bound to loopback inside its container) is not.
        await deferToThread(http_get, self.port, "dutybound.localhost", "/")
        await self.until_state("dutybound.localhost", "ready", timeout=90)
        probe = (
            "import socket\n"
            "def reach(port):\n"
            "    try:\n"
            "        socket.create_connection(('tasks.dutybound', port), timeout=3).close()\n"
            "        return 'open'\n"
            "    except OSError as error:\n"
            "        return type(error).__name__\n"
            "print(reach(8081), reach(18800))\n"
        )
        output = await deferToThread(
            self.client.containers.run, "orchestrator/demo-agent:dev", ["-c", probe],
            entrypoint="python3", network=f"{self.stack}_agents", remove=True)
        mission_control, gateway = output.decode().split()
        self.assertEqual(mission_control, "open")
        self.assertNotEqual(gateway, "open")


class SystemdUnitTests(TestCase):
    def test_unit_passes_systemd_analyze_verify(self):
        if shutil.which("systemd-analyze") is None:
            reason = "systemd-analyze is missing (apt-get install systemd; dev/prerequisites does)"
            if engine.in_ci():
                self.fail(reason)
            raise SkipTest(reason)
        done = subprocess.run([str(REPO / "deploy" / "check"), "unit"], capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("ok: systemd-analyze verify", done.stdout)
