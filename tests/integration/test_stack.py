"""
The whole stack, for real: deploy/stack.yaml deployed with `docker stack deploy` under a
stack name of its own, on a free port (PROXY_PORT), with a small override (a short idle
timeout, test secrets), exercised through the published port and from inside its
containers, then removed. It runs beside the demo (`deploy/demo up`), which keeps port
8080. The orchestrator reaches Docker only through the stack's socket proxy, and its
events go to the stack's event sink. And the shipped files: the systemd unit, verified;
the example configuration and secrets, checked.
"""

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
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
IMAGES = ("orchestrator/orchestrator:dev", "orchestrator/demo-agent:dev",
          "orchestrator/docker-proxy:dev")
IDLE_TIMEOUT = 6
DUTYBOUND_TOKEN = "dutybound-test-token-0123456789"
#: Run inside an agent's container: one call to the agents' API (argv: method, path,
#: JSON body or "null", token or ""); prints the status and the JSON answer.
AGENTS_API_CALL = """
import json, sys, urllib.error, urllib.request
method, path, body, token = sys.argv[1:5]
data = None if body == "null" else body.encode()
headers = {"Authorization": "Bearer " + token} if token else {}
request = urllib.request.Request("http://tasks.orchestrator:8090" + path, data=data,
                                 method=method, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=10) as answer:
        print(answer.status, answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
"""
#: What deploy/stack.yaml asks for; lower where the engine's own limit is lower.
NOFILE_LIMIT = 65536

#: Run in the orchestrator's container: each (method, path) of argv[1] (JSON) sent to the
#: socket proxy, printed with the status it got. No call here changes anything if let
#: through: the bodies are empty specs Docker refuses, a DELETE names this test's own
#: service.
PROXY_CALLS = """
import json, sys, urllib.error, urllib.request
for method, path in json.loads(sys.argv[1]):
    body = b"{}" if method == "POST" else None
    request = urllib.request.Request("http://tasks.docker-proxy:2375" + path, data=body,
                                     method=method, headers={"Content-Type": "application/json"})
    try:
        status = urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as error:
        status = error.code
    print(json.dumps([method, path, status]))
"""


def http_get(port: int, host: str, path: str = "/", timeout: float = 10,
             method: str = "GET"):
    """
    A plain HTTP/1.1 request (a GET, or an empty C{method}) to 127.0.0.1:C{port} with
    C{Host: host} (blocking; run it in a thread). Returns (status, body).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        length = "Content-Length: 0\r\n" if method != "GET" else ""
        connection.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{length}"
                           "Connection: close\r\n\r\n".encode())
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


def http_post(port: int, host: str, path: str, timeout: float = 20) -> tuple[int, dict]:
    """
    An empty POST to 127.0.0.1:C{port} with C{Host: host} (blocking): (status, JSON).
    """
    status, body = http_get(port, host, path, timeout, method="POST")
    try:
        return status, json.loads(body or b"{}")
    except ValueError:
        return status, {"error": f"not JSON: {body[:200]!r}"}


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
        # dutybound holds a token: another agent's credential for the demo to misuse.
        config["agents"]["dutybound"]["token_file"] = "/run/secrets/dutybound_token"
        (self.directory / "dutybound_token").write_text(DUTYBOUND_TOKEN)
        (self.directory / "orchestrator.yaml").write_text(yaml.safe_dump(config))
        (self.directory / "admin_token").write_text("test-admin-token-" + self.stack)
        # The demo's own: this stack's event sink (the short name resolves on its network).
        shutil.copy(REPO / "deploy" / "secrets" / "webhook_url.example",
                    self.directory / "webhook_url")
        override = {
            "version": "3.8",
            "configs": {"orchestrator_config": {
                "name": f"{self.stack}_config",
                "file": str(self.directory / "orchestrator.yaml")}},
            "secrets": {
                "admin_token": {"name": f"{self.stack}_admin_token",
                                "file": str(self.directory / "admin_token")},
                "webhook_url": {"name": f"{self.stack}_webhook_url",
                                "file": str(self.directory / "webhook_url")},
                "dutybound_token": {"name": f"{self.stack}_dutybound_token",
                                    "file": str(self.directory / "dutybound_token")}},
            "services": {"orchestrator": {"secrets": [
                {"source": "admin_token", "target": "admin_token", "uid": "10001",
                 "mode": 0o400},
                {"source": "webhook_url", "target": "webhook_url", "uid": "10001",
                 "mode": 0o400},
                {"source": "dutybound_token", "target": "dutybound_token", "uid": "10001",
                 "mode": 0o400}]}},
        }
        (self.directory / "override.yaml").write_text(yaml.safe_dump(override))
        # The port by variable, not by override: an override's ports are added to the
        # file's, and the file's 8080 belongs to the demo when it is up.
        environment = {**os.environ,
                       "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
                       "PROXY_PORT": str(self.port),
                       "NOFILE_LIMIT": str(self.nofile_limit())}
        done = subprocess.run(
            ["docker", "stack", "deploy", "--resolve-image", "never",
             "-c", str(REPO / "deploy" / "stack.yaml"), "-c", str(self.directory / "override.yaml"),
             self.stack],
            capture_output=True, text=True, env=environment, timeout=120)
        self.assertEqual(done.returncode, 0, f"docker stack deploy failed: {done.stderr}")

    def nofile_limit(self) -> int:
        """
        L{NOFILE_LIMIT}, or the engine's own hard limit if lower (as deploy/demo does): a
        task asking for more than the engine may give fails to start.
        """
        output = self.client.containers.run(IMAGES[0], ["-c", "ulimit -Hn"], entrypoint="sh",
                                            remove=True).decode().strip()
        return NOFILE_LIMIT if output == "unlimited" else min(NOFILE_LIMIT, int(output))

    def remove_stack(self) -> Deferred:
        def remove():
            subprocess.run(["docker", "stack", "rm", self.stack], capture_output=True, timeout=60)
            deadline = time.monotonic() + 90
            label = {"label": f"com.docker.stack.namespace={self.stack}"}
            while time.monotonic() < deadline:
                if not self.client.services.list(filters=label) \
                        and not self.client.networks.list(filters=label):
                    return
                # The networks go only once the tasks have; ask again.
                subprocess.run(["docker", "stack", "rm", self.stack], capture_output=True,
                               timeout=60)
                time.sleep(1)

        return deferToThread(remove)

    async def container(self, service: str):
        """
        The running container of this stack's C{service} (waiting for it to start).
        """
        async def running():
            found = await deferToThread(self.client.containers.list, filters={
                "label": f"com.docker.swarm.service.name={self.stack}_{service}",
                "status": "running"})
            assert found, f"no running container of {self.stack}_{service} yet"
            return found[0]

        return await engine.poll_until(running, reactor, timeout=120, interval=0.5)

    async def through_the_docker_proxy(self, calls: list[tuple[str, str]]) -> dict:
        """
        Send C{calls} to the socket proxy from inside the orchestrator's container, as
        the orchestrator would; return {(method, path): status}.
        """
        orchestrator = await self.container("orchestrator")
        # Until the proxy's task is in the DNS answers, tasks.docker-proxy does not resolve.
        await self.until_state("demo.localhost", "sleeping", timeout=120)
        code, output = await deferToThread(
            orchestrator.exec_run, ["python3", "-c", PROXY_CALLS, json.dumps(calls)])
        self.assertEqual(code, 0, output.decode())
        return {(method, path): status for method, path, status in
                map(json.loads, output.decode().splitlines())}

    def events_received(self) -> list[dict]:
        """
        The events the stack's event sink has printed so far.
        """
        done = subprocess.run(["docker", "service", "logs", "--raw", f"{self.stack}_event-sink"],
                              capture_output=True, text=True, timeout=60)
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

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

        # Every change was sent to the event sink by the webhook consumer (url_file:
        # /run/secrets/webhook_url), over the events network.
        async def all_sent():
            sent = [event["event"] for event in await deferToThread(self.events_received)
                    if event.get("agent") == "demo"]
            for expected in ("agent.reconciled", "agent.wake", "agent.ready", "agent.sleep"):
                assert expected in sent, f"{expected} not among {sent}"

        await engine.poll_until(all_sent, reactor, timeout=30, interval=1)

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


    @inline
    async def test_docker_proxy_refuses_every_call_the_orchestrator_does_not_make(self):
        demo = f"{self.stack}_demo"
        forbidden = [
            ("POST", "/v1.41/containers/create"),
            ("GET", "/v1.41/containers/json"),
            ("POST", "/v1.41/containers/x/exec"),
            ("GET", "/v1.41/secrets"),
            ("GET", "/v1.41/configs"),
            ("POST", "/v1.41/services/create"),
            ("DELETE", f"/v1.41/services/{self.stack}_dutybound"),
            ("GET", f"/v1.41/services/{demo}/logs"),
            ("GET", "/v1.41/info"),
            ("GET", "/v1.41/images/json"),
            ("POST", "/v1.41/swarm/leave"),
            ("GET", "/v1.41/services/..%2fsecrets"),
            ("POST", f"/v1.41/services/{demo}"),
            ("GET", "/v1.41/services/create/../../secrets"),
        ]
        allowed = [
            ("GET", "/version"),
            ("GET", "/_ping"),
            ("GET", "/v1.41/services"),
            ("GET", f"/v1.41/services/{demo}"),
            ("GET", "/v1.41/tasks"),
            ("GET", "/v1.41/nodes"),
        ]
        answered = await self.through_the_docker_proxy(forbidden + allowed)
        self.assertEqual({call: answered[call] for call in forbidden},
                         {call: 403 for call in forbidden})
        self.assertEqual({call: answered[call] for call in allowed},
                         {call: 200 for call in allowed})

    @inline
    async def test_only_the_orchestrator_shares_a_network_with_the_docker_proxy(self):
        await self.container("docker-proxy")
        await self.until_state("demo.localhost", "sleeping", timeout=120)
        # From the agents' overlay the proxy's name does not even resolve.
        probe = ("import socket\n"
                 "try:\n"
                 "    socket.getaddrinfo('tasks.docker-proxy', 2375)\n"
                 "    print('resolved')\n"
                 "except OSError as error:\n"
                 "    print(type(error).__name__)\n")
        output = await deferToThread(
            self.client.containers.run, "orchestrator/demo-agent:dev", ["-c", probe],
            entrypoint="python3", network=f"{self.stack}_agents", remove=True)
        self.assertEqual(output.decode().strip(), "gaierror")
        # And no container can join the proxy's network.
        done = await deferToThread(subprocess.run, [
            "docker", "run", "--rm", "--network", f"{self.stack}_docker-api",
            "--entrypoint", "true", "orchestrator/demo-agent:dev"],
            capture_output=True, text=True, timeout=60)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("not manually attachable", done.stderr)

    @inline
    async def test_orchestrator_runs_without_the_socket_capabilities_or_a_writable_root(self):
        orchestrator = await self.container("orchestrator")
        await deferToThread(orchestrator.reload)
        host = orchestrator.attrs["HostConfig"]
        self.assertTrue(host["ReadonlyRootfs"])
        self.assertEqual(host["CapDrop"], ["ALL"])
        self.assertNotIn("/var/run/docker.sock",
                         [mount["Destination"] for mount in orchestrator.attrs["Mounts"]])
        code, output = await deferToThread(orchestrator.exec_run, ["cat", "/proc/1/status"])
        status = dict(line.split(":\t", 1) for line in output.decode().splitlines()
                      if ":\t" in line)
        self.assertEqual(status["Uid"].split()[0], "10001")
        self.assertEqual(status["CapEff"], "0000000000000000")
        code, output = await deferToThread(orchestrator.exec_run, ["cat", "/proc/1/limits"])
        limits = [line for line in output.decode().splitlines() if "open files" in line]
        self.assertEqual(limits[0].split()[3:5], [str(self.nofile_limit())] * 2)


    async def agents_api(self, container, method: str, path: str, body: dict | None = None,
                         token: str | None = None) -> tuple[int, dict]:
        """
        Call the agents' API from inside C{container} (on the agents' overlay), as an
        agent does: by its address, or with C{token}.
        """
        code, output = await deferToThread(container.exec_run, [
            "python3", "-c", AGENTS_API_CALL, method, path, json.dumps(body),
            token or ""])
        self.assertEqual(code, 0, output.decode())
        status, answer = output.decode().split(" ", 1)
        return int(status), json.loads(answer)

    @inline
    async def test_agents_register_hosts_and_take_leases_from_inside_over_the_overlay(self):
        await self.until_state("demo.localhost", "sleeping", timeout=120)
        await deferToThread(http_get, self.port, "demo.localhost", "/")
        await self.until_state("demo.localhost", "ready", timeout=90)
        demo = await self.container("demo")

        # The demo's button: the agent registers its preview from inside its container,
        # known by its address on the overlay; the host then serves through the proxy.
        # (Right after its task starts, the overlay's DNS may not name the orchestrator's
        # task yet: the button answers 502 then, and a second press works.)
        async def registered():
            status, route = await deferToThread(http_post, self.port, "demo.localhost",
                                                "/demo/preview")
            assert status == 201, (status, route)
            return route

        route = await engine.poll_until(registered, reactor, timeout=30, interval=1)
        preview = route["host"]
        self.assertTrue(preview.endswith(".demo.localhost"), preview)
        status, body = await deferToThread(http_get, self.port, preview, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"Preview of", body)

        # Each misuse is refused and changes nothing.
        for call, expected in [
            (("POST", "/api/services", {"host": "x.dutybound.localhost", "port": 3000}), 403),
            (("POST", "/api/services", {"host": "y.demo.localhost",
                                        "backend": "http://tasks.docker-proxy:2375"}), 403),
            (("DELETE", f"/api/services/{preview}", None, DUTYBOUND_TOKEN), 403),
            (("GET", "/api/services", None, "not-a-token-of-anyone"), 401),
        ]:
            status, answer = await self.agents_api(demo, *call)
            self.assertEqual(status, expected, (call, answer))
            self.assertIn("error", answer)
        status, listed = await self.agents_api(demo, "GET", "/api/services")
        self.assertEqual([item["host"] for item in listed["services"]], [preview])

        # A restart of the orchestrator keeps the awake agent's route and a lease.
        status, lease = await deferToThread(http_post, self.port, "demo.localhost",
                                            "/demo/lease?seconds=60")
        self.assertEqual(status, 201, lease)
        old = await self.container("orchestrator")
        await deferToThread(subprocess.run, [
            "docker", "service", "update", "--force", "--detach", f"{self.stack}_orchestrator"],
            capture_output=True, timeout=60)

        async def restarted():
            current = await self.container("orchestrator")
            assert current.id != old.id, "the old task still runs"
            try:
                status, body = await deferToThread(http_get, self.port, preview, "/")
            except OSError as error:  # the new task is not listening yet
                raise AssertionError(f"the proxy does not answer yet: {error}") from None
            assert status == 200 and b"Preview of" in body, (status, body[:100])

        await engine.poll_until(restarted, reactor, timeout=120, interval=1)
        # (The new task has a new address, which the overlay's DNS learns in a moment.)
        async def lease_kept():
            status, leases = await self.agents_api(demo, "GET", "/api/lease")
            self.assertEqual([item["id"] for item in leases["leases"]], [lease["id"]])

        await engine.poll_until(lease_kept, reactor, timeout=30, interval=1)

        # The lease keeps the demo awake with no traffic past its idle timeout; its end
        # lets it sleep, and its route goes with it: a request for it wakes the demo.
        self.assertGreater(lease["expires"] - time.time(), IDLE_TIMEOUT + 2)
        await deferToThread(time.sleep, IDLE_TIMEOUT + 2)
        self.assertEqual(await self.health("demo.localhost"), "ready")
        await self.until_state("demo.localhost", "sleeping",
                               timeout=lease["expires"] - time.time() + IDLE_TIMEOUT + 30)
        status, body = await deferToThread(http_get, self.port, preview, "/")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["agent"], "demo")
        await self.until_state("demo.localhost", "ready", timeout=90)


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


#: The default address pool Swarm takes overlay subnets from (`docker swarm init
#: --default-addr-pool` changes it).
SWARM_ADDRESS_POOL = ipaddress.ip_network("10.0.0.0/8")


class ShippedFilesTests(TestCase):
    """
    The example configuration and secrets are safe to start from. No engine needed.
    """

    def twistd_config_problems(self, config: dict) -> str:
        """
        What C{twistd orchestrator --config} says of C{config} (which it must refuse).
        """
        path = Path(self.mktemp())
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "orchestrator", "--config", str(path)],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 2, done.stdout + done.stderr)
        return done.stderr

    def demo_secrets(self, directory: Path) -> subprocess.CompletedProcess:
        """
        C{deploy/demo secrets} on a copy of deploy/secrets/*.example in C{directory}.
        """
        for example in (REPO / "deploy" / "secrets").glob("*.example"):
            if not (directory / example.name).exists():
                shutil.copy(example, directory / example.name)
        return subprocess.run([str(REPO / "deploy" / "demo"), "secrets"], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "SECRETS": str(directory)})

    def test_the_example_admin_token_is_refused_by_the_configuration(self):
        problems = self.twistd_config_problems({
            "admin": {"token_file": str(REPO / "deploy" / "secrets" / "admin_token.example")},
            "agents": {}})
        self.assertIn("admin.token_file", problems)
        self.assertIn("at least 16 characters", problems)

    def test_demo_makes_a_random_admin_token_and_keeps_it(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        done = self.demo_secrets(directory)
        self.assertEqual(done.returncode, 0, done.stderr)
        token = (directory / "admin_token").read_text()
        self.assertRegex(token, r"^[0-9a-f]{64}$")
        self.assertEqual((directory / "admin_token").stat().st_mode & 0o777, 0o600)
        self.assertEqual(self.demo_secrets(directory).returncode, 0)
        self.assertEqual((directory / "admin_token").read_text(), token)

    def test_demo_refuses_a_copy_of_the_example_admin_token(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        shutil.copy(REPO / "deploy" / "secrets" / "admin_token.example", directory / "admin_token")
        done = self.demo_secrets(directory)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("fewer than 16 characters", done.stderr)

    def test_demo_webhook_url_is_the_event_sink_on_the_private_network(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "webhook_url").write_text("https://hooks.example.invalid/orchestrator")
        self.assertEqual(self.demo_secrets(directory).returncode, 0)
        self.assertEqual((directory / "webhook_url").read_text().strip(),
                         "http://tasks.event-sink:8082/events")

    def test_no_shipped_configuration_trusts_the_overlay_as_proxies(self):
        for path in (REPO / "examples" / "orchestrator.yaml",
                     REPO / "deploy" / "orchestrator.stack.yaml"):
            config = yaml.safe_load(path.read_text())
            trusted = (config.get("proxy") or {}).get("trusted_proxies") or []
            overlapping = [network for network in trusted
                           if ipaddress.ip_network(network, strict=False).overlaps(
                               SWARM_ADDRESS_POOL)]
            self.assertEqual(overlapping, [], f"{path.relative_to(REPO)} trusts the overlay")
