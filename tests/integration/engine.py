"""
Test support for everything that needs the real Docker engine in Swarm mode.

With L{cluster} (the multi-node one), the only module besides L{orchestrator.swarm.docker}
that imports C{docker}: it sets up and tears down what the integration tests run against
(the test image, uniquely named services), so that the code under test sees nothing but
a Swarm.

Usage, in a trial test::

    def setUp(self):
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)

    def test_something(self):
        name = engine.unique_name("wake")
        engine.create_service(self.client, name, replicas=0, port=engine.free_port())
        self.addCleanup(engine.remove_service, self.client, name)

Without an engine the tests are skipped, loudly; with C{CI} set they fail instead, since
in CI the Swarm tests must run. Start one with C{dev/engine}.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import docker
import docker.errors
from docker.types import EndpointSpec, Resources, ServiceMode
from twisted.internet import task

_T = TypeVar("_T")

#: Where the engine is, as both the tests' client and the code under test use it.
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"

#: The tiny busybox HTTP server (port 8080; C{/} says "hello from httpd", C{/health} "ok",
#: C{/cgi-bin/echo} answers with the method and body it received).
TEST_IMAGE = "orchestrator-test/httpd:latest"
#: Our demo agent (deploy/demo-agent): a page, /health and a WebSocket echo at /ws.
DEMO_IMAGE = "orchestrator/demo-agent:dev"
DEMO_PORT = 8081
IMAGE_BUILD = Path(__file__).parents[2] / "deploy" / "images" / "build"
TEST_IMAGE_PORT = 8080
IMAGE_CONTEXT = Path(__file__).parent / "images" / "httpd"
#: Debian's busybox-static; must be statically linked (the image has no libc).
BUSYBOX = Path("/bin/busybox")

#: Every test service is named C{orchtest-...} and carries this label.
NAME_PREFIX = "orchtest-"
TEST_LABEL = "orchtest"
#: Test services older than this are leftovers of a crashed run, swept away.
LEFTOVER_AGE = timedelta(hours=1)

_IMAGE_HASH_LABEL = "orchestrator.test.context-sha256"
_NANOSECONDS = 1_000_000_000


class EngineUnavailable(Exception):
    """
    No usable Docker engine while C{CI} is set: the integration tests must fail, not skip.
    """


def engine_url() -> str:
    """
    C{DOCKER_HOST} if set, else the default socket.
    """
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


def in_ci() -> bool:
    """
    Whether C{CI} is set (to anything but an empty or false value).
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


_engine: docker.DockerClient | None = None
_engine_problem: str | None = None


def engine_or_skip() -> docker.DockerClient:
    """
    A client for the Docker engine at L{engine_url}, checked once per process to be a
    Swarm manager (and swept of leftover test services).

    @raise unittest.SkipTest: there is none, outside CI.
    @raise EngineUnavailable: there is none, and C{CI} is set.
    """
    global _engine, _engine_problem
    if _engine is None and _engine_problem is None:
        try:
            _engine = _connect(engine_url())
        except Exception as problem:
            _engine_problem = str(problem)
        else:
            sweep_leftovers(_engine)
    if _engine is not None:
        return _engine
    reason = (
        f"no Docker engine in swarm mode reachable at {engine_url()}: run dev/engine "
        f"({_engine_problem})"
    )
    if in_ci():
        raise EngineUnavailable(f"{reason}; CI is set, so the Swarm tests must run")
    raise unittest.SkipTest(reason)


def _connect(url: str) -> docker.DockerClient:
    client = docker.DockerClient(base_url=url, timeout=10, version="auto")
    swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        client.close()
        raise RuntimeError(
            f"the engine is not a Swarm manager (node state "
            f"{swarm.get('LocalNodeState')!r})"
        )
    return client


def unique_name(prefix: str) -> str:
    """
    A service name no other test (or run) uses: C{orchtest-<prefix>-<6 hex digits>}.
    """
    return f"{NAME_PREFIX}{prefix}-{secrets.token_hex(3)}"


def free_port() -> int:
    """
    A TCP port nothing listens on right now, to publish a test service on (host mode
    binds all interfaces, so the check does too).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def create_service(
    client: docker.DockerClient,
    name: str,
    *,
    replicas: int | None = 0,
    labels: dict[str, str] | None = None,
    image: str = TEST_IMAGE,
    port: int | None = None,
    target_port: int = TEST_IMAGE_PORT,
    stop_grace: float = 1.0,
    stop_signal: str | None = None,
    networks: list[str] | None = None,
    memory_reservation: int | None = None,
    memory_limit: int | None = None,
):
    """
    Create a test service: C{replicas=None} for global mode; C{port} publishes the
    image's C{target_port} there in host mode (no routing mesh here). The endpoint mode is
    C{dnsrr}, as Swarm's virtual IPs need IPVS, which this kernel lacks. The memory
    reservation and limit are in bytes. The caller registers L{remove_service} as a
    cleanup.
    """
    mode = ServiceMode("global") if replicas is None else ServiceMode("replicated", replicas)
    ports = {port: (target_port, "tcp", "host")} if port is not None else None
    return client.services.create(
        image,
        name=name,
        mode=mode,
        labels={TEST_LABEL: "1", **(labels or {})},
        endpoint_spec=EndpointSpec(mode="dnsrr", ports=ports),
        stop_grace_period=int(stop_grace * _NANOSECONDS),
        stop_signal=stop_signal,
        networks=networks,
        resources=Resources(mem_reservation=memory_reservation, mem_limit=memory_limit)
        if memory_reservation or memory_limit else None,
    )


def create_network(client: docker.DockerClient, name: str) -> str:
    """
    An encrypted, attachable overlay network for one test, named after it; the caller
    registers L{remove_network} as a cleanup (before the services on it).
    """
    client.networks.create(name, driver="overlay", attachable=True,
                           options={"encrypted": "true"}, labels={TEST_LABEL: "1"})
    return name


def remove_network(client: docker.DockerClient, name: str, timeout: float = 30.0) -> None:
    """
    Remove a test network once the tasks of its removed services have left it (Swarm
    takes a moment); give up after C{timeout} seconds, leaving it to the sweep.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.networks.get(name).remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)


def remove_service(client: docker.DockerClient, name: str) -> None:
    """
    Remove a test service if it is still there (its containers stop in the background).
    """
    try:
        client.api.remove_service(name)
    except docker.errors.NotFound:
        pass


def sweep_leftovers(client: docker.DockerClient, older_than: timedelta = LEFTOVER_AGE) -> None:
    """
    Remove test services left behind by crashed runs (named C{orchtest-*}, older than
    C{older_than}); younger ones may belong to a run in progress.
    """
    cutoff = datetime.now(UTC) - older_than
    for service in client.api.services(filters={"name": NAME_PREFIX}):
        name = service["Spec"]["Name"]
        created = datetime.fromisoformat(service["CreatedAt"])
        if name.startswith(NAME_PREFIX) and created < cutoff:
            remove_service(client, name)
    for network in client.api.networks(filters={"label": TEST_LABEL}):
        created = datetime.fromisoformat(network["Created"][:26].rstrip("Z") + "+00:00")
        if network["Name"].startswith(NAME_PREFIX) and created < cutoff:
            remove_network(client, network["Name"], timeout=0)


def ensure_test_image(client: docker.DockerClient) -> str:
    """
    Build L{TEST_IMAGE} from C{tests/integration/images/httpd/} unless an image built
    from the same files is already there; return its tag.
    """
    digest = _context_digest()
    try:
        if client.images.get(TEST_IMAGE).labels.get(_IMAGE_HASH_LABEL) == digest:
            return TEST_IMAGE
    except docker.errors.ImageNotFound:
        pass
    _check_static(BUSYBOX)
    with tempfile.TemporaryDirectory(prefix="orchtest-image-") as context:
        shutil.copytree(IMAGE_CONTEXT, context, dirs_exist_ok=True)
        shutil.copy2(BUSYBOX, Path(context) / "busybox")
        client.images.build(
            path=context, tag=TEST_IMAGE, labels={_IMAGE_HASH_LABEL: digest}, rm=True
        )
    return TEST_IMAGE


def ensure_demo_image(client: docker.DockerClient) -> str:
    """
    The demo agent's image (HTTP and a WebSocket echo on L{DEMO_PORT}), built with
    C{deploy/images/build} unless it is there (C{dev/test} builds it beforehand).
    """
    try:
        client.images.get(DEMO_IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run([str(IMAGE_BUILD)], check=True, timeout=900)
    return DEMO_IMAGE


#: The orchestrator image, whose venv the systemd host takes.
ORCHESTRATOR_IMAGE = "orchestrator/orchestrator:dev"
#: A Debian bookworm with systemd as init, made with debootstrap.
SYSTEMD_BASE = "orchestrator-test/systemd-base:bookworm"
#: That base with the orchestrator installed as deploy/orchestrator.service says.
SYSTEMD_HOST = "orchestrator-test/systemd-host:latest"
SYSTEMD_CONTEXT = Path(__file__).parent / "images" / "systemd"
#: What a host running the unit has: systemd as init, C{kill} (procps) for ExecReload,
#: and the python3 the orchestrator image's venv was made with.
SYSTEMD_PACKAGES = "systemd,systemd-sysv,procps,python3,ca-certificates"
UNIT_FILE = Path(__file__).parents[2] / "deploy" / "orchestrator.service"


def ensure_systemd_host(client: docker.DockerClient) -> str:
    """
    Build L{SYSTEMD_HOST}: the orchestrator image's venv, C{deploy/orchestrator.service}
    and the test config on L{SYSTEMD_BASE} (made with debootstrap when missing, about
    40 s). The orchestrator image must have been built on Debian's python3 (the venv
    points at it), as C{deploy/images/build} does where no registry is reachable.
    """
    ensure_demo_image(client)  # deploy/images/build makes the orchestrator image too
    venv = client.containers.run(ORCHESTRATOR_IMAGE, ["/opt/orchestrator/pyvenv.cfg"],
                                 entrypoint="cat", remove=True).decode()
    if "home = /usr/bin\n" not in venv:
        reason = (f"{ORCHESTRATOR_IMAGE} was built on another Python than Debian's "
                  f"(pyvenv.cfg: {venv.strip()!r}); build it with "
                  "BASE_IMAGE=local/python-base:bookworm deploy/images/build")
        if in_ci():
            raise AssertionError(reason)
        raise unittest.SkipTest(reason)
    _ensure_systemd_base(client)
    with tempfile.TemporaryDirectory(prefix="orchtest-systemd-") as context:
        shutil.copytree(SYSTEMD_CONTEXT, context, dirs_exist_ok=True)
        shutil.copy2(UNIT_FILE, Path(context) / "orchestrator.service")
        client.images.build(path=context, tag=SYSTEMD_HOST, rm=True, buildargs={
            "SYSTEMD_BASE": SYSTEMD_BASE, "ORCHESTRATOR_IMAGE": ORCHESTRATOR_IMAGE,
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid)})
    return SYSTEMD_HOST


def _ensure_systemd_base(client: docker.DockerClient) -> None:
    try:
        if client.images.get(SYSTEMD_BASE).labels.get(_IMAGE_HASH_LABEL) == SYSTEMD_PACKAGES:
            return
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: apt-get install debootstrap "
                           "(dev/prerequisites does)")
    with tempfile.TemporaryDirectory(prefix="orchtest-systemd-root-", dir="/var/tmp") as root:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={SYSTEMD_PACKAGES}", "bookworm",
             root, _debian_mirror()], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        subprocess.run(
            f"tar -C {root} -c . | docker import --change 'CMD [\"/sbin/init\"]' "
            f"--change 'LABEL {_IMAGE_HASH_LABEL}={SYSTEMD_PACKAGES}' - {SYSTEMD_BASE}",
            shell=True, check=True, capture_output=True, timeout=300)


def _debian_mirror() -> str:
    """
    The Debian mirror apt uses here (the first C{URIs:} of debian.sources).
    """
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and line.split()[1:]:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _context_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(IMAGE_CONTEXT.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(IMAGE_CONTEXT)).encode() + b"\0")
            digest.update(path.read_bytes())
    if BUSYBOX.exists():
        digest.update(BUSYBOX.read_bytes())
    return digest.hexdigest()


def _check_static(binary: Path) -> None:
    """
    Refuse a dynamically linked busybox, which would only fail later, inside the
    container, with a puzzling "no such file or directory".
    """
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: apt-get install busybox-static")
    data = binary.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise RuntimeError(f"{binary} is not a 64-bit ELF executable")
    # ELF64 header: program headers at e_phoff (offset 32), e_phentsize and e_phnum
    # at offsets 54 and 56; a PT_INTERP (type 3) entry names the dynamic loader.
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for index in range(phnum):
        (segment_type,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if segment_type == 3:
            raise RuntimeError(
                f"{binary} is dynamically linked: apt-get install busybox-static"
            )


async def poll_until(
    check: Callable[[], Awaitable[_T]],
    reactor,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> _T:
    """
    Call C{check} until it returns instead of raising C{AssertionError}, and return what
    it returned; after C{timeout} seconds, raise its last C{AssertionError}. For
    integration tests only, which wait for a real engine: unit tests never poll.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await task.deferLater(reactor, interval, lambda: None)


def websocket_echo(sock: socket.socket, host: str, messages) -> list[str | bytes]:
    """
    Over C{sock} (connected to a proxy), open a WebSocket to C{host}'s C{/ws} echo, send
    C{messages} one at a time and return the answers.

    @raise websockets.exceptions.InvalidStatus: if the handshake is refused.
    """
    # Here, not at the top: the bench (bench/run, the system's Python) has no
    # websockets package and needs none of this.
    import websockets.sync.client

    with websockets.sync.client.connect(f"ws://{host}/ws", sock=sock,
                                        open_timeout=10) as websocket:
        answers = []
        for message in messages:
            websocket.send(message)
            answers.append(websocket.recv(timeout=10))
        return answers
