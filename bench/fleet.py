"""
Many agents on the real Swarm, for the density suites: test services made and removed in
bulk (uniquely named, so a crashed run's are swept by the test helpers' sweep), HTTP as a
client sees it, and the engine's running containers sampled from a thread.

Every wait is bounded; every service made is removed by the suite that made it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from bench.harness import BenchError

SERVICE_LABEL = "com.docker.swarm.service.name"


def engine():
    """
    The test helpers' module and a client for the Docker engine in swarm mode, with the
    busybox test image built.
    """
    try:
        from tests.integration import engine as helpers
    except ImportError as error:
        raise BenchError(f"the integration test helpers do not import: {error}") from None
    try:
        client = helpers.engine_or_skip()
    except Exception as error:
        raise BenchError(f"no Docker engine in swarm mode: {error}") from None
    helpers.ensure_test_image(client)
    return helpers, client


def free_ports(count: int, first: int = 20000, last: int = 29999) -> list[int]:
    """
    C{count} ports nothing listens on now, below the kernel's ephemeral range (which
    starts at 32768 here): the listeners the bench picks later with C{free_port} come
    from that range, so they never take a port published for an agent's service.
    """
    ports = []
    for port in range(first, last + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise BenchError(f"not {count} free ports from {first} to {last}")


def in_parallel(work: Callable[[Any], Any], items: Iterable[Any], threads: int = 8) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


def create_services(helpers, client, names: list[str], ports: list[int], **options) -> None:
    """
    One service per name, at 0 replicas, publishing the image's port on C{ports} (host
    mode); C{options} go to the helpers' C{create_service}.
    """
    in_parallel(lambda pair: helpers.create_service(client, pair[0], replicas=0, port=pair[1],
                                                    **options), list(zip(names, ports, strict=True)))


def remove_services(helpers, client, names: list[str]) -> None:
    in_parallel(lambda name: helpers.remove_service(client, name), names)


def until_no_container(client, names: set[str], timeout: float = 120) -> None:
    """
    Wait until none of the services C{names} has a container left (removed services'
    containers stop in the background).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running_services(client, names):
            return
        time.sleep(0.5)
    raise BenchError(f"containers of the bench's services still run after {timeout:g} s")


def running_services(client, names: set[str]) -> frozenset[str]:
    """
    Which of the services C{names} have a running container now, by the engine.
    """
    containers = client.api.containers(filters={"label": SERVICE_LABEL})
    return frozenset(service for container in containers
                     if (service := (container.get("Labels") or {}).get(SERVICE_LABEL))
                     in names)


# HTTP as a client ------------------------------------------------------------------------


def request(url: str, host: str, headers: dict | None = None, timeout: float = 90,
            method: str = "GET", data: bytes | None = None):
    """
    One request; returns (status, headers, body) for any status.
    """
    prepared = urllib.request.Request(url, headers={"Host": host, **(headers or {})},
                                      method=method, data=data)
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def health(base: str, host: str) -> dict:
    return json.loads(request(base + "/api/health", host, timeout=10)[2])


def wait_for(check: Callable[[], Any], what: str, timeout: float,
             interval: float = 0.05) -> Any:
    """
    Call C{check} until it returns something true; return it. After C{timeout} seconds,
    a L{BenchError} naming C{what}.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise BenchError(f"{what}: not within {timeout:g} s (last: {last!r})")


def timed_wake(base: str, host: str, timeout: float = 90) -> float:
    """
    Seconds from a client's first request to its first 200: one request held until the
    agent is ready (C{Prefer: wait=60}), asked again while the answer is a 503 (a wake
    waiting for room may take longer than one hold).
    """
    started = time.monotonic()
    body = b""
    while time.monotonic() - started < timeout:
        status, _, body = request(base + "/", host, {"Prefer": "wait=60"}, timeout=timeout)
        if status == 200:
            return time.monotonic() - started
        if status != 503:
            raise BenchError(f"{host} answered {status}: {body[:200]!r}")
        time.sleep(0.05)
    raise BenchError(f"{host} did not answer 200 within {timeout:g} s (last: {body[:300]!r})")


# The engine, sampled ---------------------------------------------------------------------


@attrs.frozen
class Sample:
    time: float
    running: frozenset[str]


class ContainerSampler:
    """
    Lists the running containers of C{services} every C{interval} seconds in a thread,
    while the C{with} block runs.
    """

    def __init__(self, client, services: set[str], interval: float = 0.05) -> None:
        self._client = client
        self._services = services
        self._interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                running = running_services(self._client, self._services)
            except Exception:  # the engine busy for a moment: the next sample counts
                self.errors += 1
            else:
                self.samples.append(Sample(time.monotonic(), running))
            self._stop.wait(self._interval)

    def __enter__(self) -> ContainerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
