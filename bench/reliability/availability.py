"""
Slow readers, slow bodies, idle connections and trickled headers against the
orchestrator in a memory cgroup with the stack's limit, a well-behaved client
measuring what it meets meanwhile.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sys
import threading
import time

import attrs
import yaml

from bench.harness import REPO, Bench, BenchError, free_port, twistd, wait_for_port
from bench.reliability.cgroup import MemoryCgroup, open_files, rss_kib
from bench.reliability.clients import GoodClient, Held, attack, percentile

HOST = "rel.localhost"
#: Another agent on the same orchestrator, which nobody attacks.
OTHER_HOST = "other.localhost"
MIB = 1024 * 1024


@attrs.frozen
class Outcome:
    """
    One run: the hostile connections' fate, the well-behaved client's, and the
    orchestrator's memory (peak, in MiB) and survival.
    """

    kind: str
    count: int
    addresses: int
    held: Held
    good_requests: int
    good_errors: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    other_requests: int
    other_errors: dict[str, int]
    other_p99_ms: float | None
    peak_mib: float
    baseline_mib: float
    peak_rss_mib: float
    baseline_rss_mib: float
    survived: bool
    oom_kills: int
    at_peak: dict[str, int]
    most_files: int
    backend_most_open: int


def start_backend(bench: Bench, name: str, record, corpus=None):
    http_port, ws_port = free_port(), free_port()
    argv = [sys.executable, "-m", "bench.reliability.backend", str(http_port), str(ws_port),
            str(record)] + ([str(corpus)] if corpus else [])
    process = bench.spawn(name, argv, cpu=0, purpose=f"{name}: the agent (records, streams, echoes)",
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    wait_for_port(process, http_port, timeout=10)
    return process, http_port, ws_port


def backend_stats(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/_stats")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def start_orchestrator(bench: Bench, name: str, *, tree, agents: dict, proxy: dict | None = None,
                       cgroup: MemoryCgroup | None = None, extra: dict | None = None,
                       agents_port: int | None = None):
    """
    twistd orchestrator from C{tree} (this repository, or another checkout for a
    before/after), on loopback, inside C{cgroup}; returns the process and its ports.
    """
    port, admin_port = free_port(), free_port()
    directory = bench.tmp / name
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        # A backlog for thousands of connections opened at once (Twisted's default is 50).
        "listen": {"proxy": f"tcp:{port}:interface=127.0.0.1:backlog=4096",
                   "admin": f"tcp:{admin_port}:interface=127.0.0.1",
                   **({"agents": f"tcp:{agents_port}:interface=127.0.0.1"} if agents_port else {})},
        "shutdown": {"drain_timeout": "5s"},
        "agents": agents,
        **({"proxy": proxy} if proxy else {}),
        **(extra or {}),
    }
    path = directory / "orchestrator.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [twistd(), "-n", "--pidfile=", f"--logfile={directory / 'twistd.log'}",
            "orchestrator", "--config", str(path)]
    if cgroup is not None:
        argv = cgroup.wrap(argv)
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root"}
    process = bench.spawn(name, argv, cpu=1, purpose=f"{name}: twistd orchestrator", env=env)
    wait_for_port(process, port, timeout=30)
    return process, port, admin_port, directory


def always_on(backend_port: int, host: str = HOST, **extra) -> dict:
    return {"backend": f"http://127.0.0.1:{backend_port}", "hosts": [host],
            "policy": "always_on", "health": {"path": "/small", "interval": "1s"}, **extra}


def wait_routable(port: int, host: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/small", headers={"Host": host})
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise BenchError(f"the orchestrator on {port} never relayed a request for {host}")


class Sampler(threading.Thread):
    """
    The peak of a cgroup's memory and a process's open files, sampled every 0.2 s.
    """

    def __init__(self, cgroup: MemoryCgroup, pid_of) -> None:
        super().__init__(daemon=True)
        self._cgroup, self._pid_of = cgroup, pid_of
        self.peak = 0
        self.at_peak: dict[str, int] = {}
        self.rss_kib = 0
        self.files = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            usage = self._cgroup.usage()
            if usage > self.peak:
                self.peak, self.at_peak = usage, self._cgroup.stat()
            pid = self._pid_of()
            self.rss_kib = max(self.rss_kib, rss_kib(pid))
            self.files = max(self.files, open_files(pid))

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def orchestrator_pid(cgroup: MemoryCgroup) -> int:
    procs = (cgroup.path / "cgroup.procs").read_text().split()
    return int(procs[0]) if procs else 0


def run_one(bench: Bench, *, tree, kind: str, count: int, addresses: int, hold: float,
            ramp: float, limit: int = 256 * MIB, proxy: dict | None = None) -> Outcome:
    """
    One kind of hostile connection, C{count} of them from C{addresses} addresses, against
    a fresh orchestrator (in a cgroup of C{limit} bytes) with the proxy settings C{proxy}.
    """
    # The cgroup outlives the scope: its processes are stopped before it is removed.
    with MemoryCgroup(f"orchestrator-reliability-{kind}-{os.getpid()}", limit) as cgroup, \
            bench.scope():
        _, backend_port, _ = start_backend(bench, f"backend-{kind}", bench.tmp / f"{kind}.jsonl")
        _, other_port, _ = start_backend(bench, f"other-{kind}", bench.tmp / f"other-{kind}.jsonl")
        process, port, _, directory = start_orchestrator(
            bench, f"orchestrator-{kind}", tree=tree,
            agents={"rel": always_on(backend_port), "other": always_on(other_port, OTHER_HOST)},
            proxy=proxy, cgroup=cgroup)
        wait_routable(port, HOST)
        wait_routable(port, OTHER_HOST)
        baseline = cgroup.usage()
        baseline_rss = rss_kib(orchestrator_pid(cgroup))
        sampler = Sampler(cgroup, lambda: orchestrator_pid(cgroup))
        sampler.start()
        good, other = GoodClient(port, HOST), GoodClient(port, OTHER_HOST)

        async def both():
            attacking = asyncio.create_task(attack(kind, count=count, port=port, host=HOST,
                                                   addresses=addresses, seconds=hold, ramp=ramp))
            await asyncio.gather(good.run(hold + 2), other.run(hold + 2))
            return await attacking

        held = asyncio.run(both())
        sampler.stop()
        survived = process.alive()
        stats = backend_stats(backend_port)
        return Outcome(
            kind=kind, count=count, addresses=addresses, held=held,
            good_requests=good.count, good_errors=good.errors,
            p50_ms=_ms(percentile(good.latencies, 0.5)),
            p99_ms=_ms(percentile(good.latencies, 0.99)),
            other_requests=other.count, other_errors=other.errors,
            other_p99_ms=_ms(percentile(other.latencies, 0.99)),
            peak_mib=max(sampler.peak, cgroup.peak()) / MIB, baseline_mib=baseline / MIB,
            peak_rss_mib=sampler.rss_kib / 1024, baseline_rss_mib=baseline_rss / 1024,
            survived=survived, oom_kills=cgroup.oom_kills(),
            at_peak={key: value // 1024 for key, value in sampler.at_peak.items()
                     if key in ("rss", "cache", "kmem", "anon", "file", "sock", "mapped_file")}, most_files=sampler.files,
            backend_most_open=stats["most_open"])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


if __name__ == "__main__":  # a quick look at one kind: KIND COUNT ADDRESSES HOLD [TREE]
    import shutil
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="reliability-"))
    try:
        with Bench(tmp, tmp) as bench:
            outcome = run_one(bench, tree=Path(sys.argv[5]) if len(sys.argv) > 5 else REPO,
                              kind=sys.argv[1], count=int(sys.argv[2]),
                              addresses=int(sys.argv[3]), hold=float(sys.argv[4]), ramp=5,
                              proxy=json.loads(os.environ.get("PROXY", "null")))
            print(attrs.asdict(outcome))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
