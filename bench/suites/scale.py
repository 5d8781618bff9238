"""
The control plane at scale: 1,000 agents configured on the real Swarm, their services
made by the suite at 0 replicas (the busybox test image, uniquely named, removed at the
end), the orchestrator running as a process and reaching Docker through a socket that
counts its API requests (L{bench.dockercalls}).

Measured: the time from starting the process until it serves (every agent's state
known), the orchestrator's idle CPU and RSS and its Swarm calls per minute, with every
agent asleep and then with 100 of them awake (woken through the proxy); and a route
lookup's cost against the number of hosts (in this process, on the same table type).
"""

from __future__ import annotations

import time
import timeit
from concurrent.futures import ThreadPoolExecutor

from bench.dockercalls import DockerCallCounter, per_kind
from bench.fleet import (
    create_services,
    engine,
    free_ports,
    health,
    remove_services,
    timed_wake,
    until_no_container,
    wait_for,
)
from bench.harness import PROXY_CPU, Bench, BenchError, free_port, wait_for_port
from bench.measure import process_cpu_seconds, status_kib
from bench.suites.base import Options, Section, table
from bench.suites.base import number as figure

AGENTS = 1000
AWAKE = 100
#: Seconds each idle window is measured.
IDLE_WINDOW = 60.0
#: Targets of the issue.
SERVE_TARGET = 5.0
CPU_TARGET = 1.0
RSS_TARGET_MIB = 150


def host(number: int) -> str:
    return f"a{number:04}.scale.localhost"


class ScaleSuite:
    """
    Needs the Docker engine in swarm mode (dev/engine) and the test image.
    """

    name = "scale"
    title = "A thousand agents: start-up, idle cost, Swarm calls"

    def run(self, bench: Bench, options: Options) -> Section:
        helpers, client = engine()
        prefix = helpers.unique_name("bench-scale")
        names = [f"{prefix}-{number:04}" for number in range(AGENTS)]
        ports = free_ports(len(names))
        started = time.monotonic()
        create_services(helpers, client, names, ports)
        created = time.monotonic() - started
        counter = DockerCallCounter(str(bench.tmp / "docker-calls.sock")).start()
        try:
            with bench.scope():
                results = self._measure(bench, names, ports, counter)
        finally:
            counter.stop()
            started = time.monotonic()
            remove_services(helpers, client, names)
            until_no_container(client, set(names))
            removed = time.monotonic() - started
        results["created"], results["removed"] = created, removed
        results["routes"] = route_lookups()
        return self._section(results)

    # Measuring --------------------------------------------------------------------------

    def _measure(self, bench: Bench, names, ports, counter: DockerCallCounter) -> dict:
        port, admin_port = free_port(), free_port()
        config = {
            "listen": {"proxy": f"tcp:{port}:interface=127.0.0.1",
                       "admin": f"tcp:{admin_port}:interface=127.0.0.1"},
            "docker": {"url": counter.url},
            "shutdown": {"drain_timeout": "2s"},
            "limits": {"max_awake": 200},
            "agents": {
                f"a{number:04}": {
                    "service": name,
                    "backend": f"http://127.0.0.1:{backend}",
                    "hosts": [host(number)],
                    "idle": {"timeout": "30m"},
                }
                for number, (name, backend) in enumerate(zip(names, ports, strict=True))
            },
        }
        shown = dict(config, agents={"a0000": config["agents"]["a0000"],
                                     "...": f"{AGENTS - 2} more like it",
                                     f"a{AGENTS - 1:04}": config["agents"][f"a{AGENTS - 1:04}"]})
        placeholders = {str(port): "<proxy port>", str(admin_port): "<admin port>",
                        counter.url: "unix://<the counting socket>",
                        names[0]: "<service 0000>", names[-1]: f"<service {AGENTS - 1:04}>",
                        str(ports[0]): "<port 0000>", str(ports[-1]): f"<port {AGENTS - 1:04}>"}
        start = time.monotonic()
        process, _ = bench.twistd_orchestrator("scale-orchestrator", config, placeholders)
        bench.configs["scale-orchestrator: orchestrator.yaml"] = _yaml(shown, placeholders)
        base = f"http://127.0.0.1:{port}"
        wait_for_port(process, port, timeout=60)
        listening = time.monotonic() - start
        # Serving: every agent's state is known (none is still "starting" from start-up).
        sample = sorted({0, AGENTS // 2, AGENTS - 1, *range(0, AGENTS, 97)})
        for number in sample:
            wait_for(lambda number=number: health(base, host(number))["status"] == "sleeping",
                     f"agent {number} reconciled", timeout=60, interval=0.01)
        serving = time.monotonic() - start
        startup_calls = per_kind(counter.between(start, time.monotonic()))
        time.sleep(5)
        asleep = self._idle(process.pid, counter)
        woken_at = time.monotonic()
        wakes = self._wake(base)
        wake_calls = counter.between(woken_at, time.monotonic())
        time.sleep(10)  # let the wakes' last looks and the first probes pass
        awake = self._idle(process.pid, counter)
        statuses = [health(base, host(number))["status"] for number in range(AWAKE)]
        if statuses.count("ready") != AWAKE:
            raise BenchError(f"of the {AWAKE} woken agents, {statuses.count('ready')} are "
                             f"ready")
        return {"listening": listening, "serving": serving, "sampled": len(sample),
                "startup_calls": startup_calls,
                "asleep": asleep, "awake": awake, "wakes": wakes,
                "wake_calls": len(wake_calls)}

    def _idle(self, pid: int, counter: DockerCallCounter) -> dict:
        cpu_before, start = process_cpu_seconds(pid), time.monotonic()
        rss = []
        while time.monotonic() - start < IDLE_WINDOW:
            rss.append(status_kib(pid, "VmRSS"))
            time.sleep(1)
        seconds = time.monotonic() - start
        calls = counter.between(start, start + seconds)
        return {"cpu": 100 * (process_cpu_seconds(pid) - cpu_before) / seconds,
                "rss_mib": max(rss) / 1024, "calls_per_minute": len(calls) * 60 / seconds,
                "calls": per_kind(calls)}

    def _wake(self, base: str) -> list[float]:
        """
        Wake the first C{AWAKE} agents through the proxy, ten clients at a time.
        """
        with ThreadPoolExecutor(10) as pool:
            return list(pool.map(lambda number: timed_wake(base, host(number), timeout=180),
                                 range(AWAKE)))

    # The report -------------------------------------------------------------------------

    def _section(self, results: dict) -> Section:
        asleep, awake = results["asleep"], results["awake"]
        rows = [
            ["all asleep", f"{AGENTS:,} / 0", f"{asleep['cpu']:.2f}",
             f"{asleep['rss_mib']:.0f}", f"{asleep['calls_per_minute']:.1f}",
             _calls(asleep["calls"])],
            [f"{AWAKE} awake", f"{AGENTS - AWAKE:,} / {AWAKE}", f"{awake['cpu']:.2f}",
             f"{awake['rss_mib']:.0f}", f"{awake['calls_per_minute']:.1f}",
             _calls(awake["calls"])],
        ]
        wakes = sorted(results["wakes"])
        routes = results["routes"]
        body = (
            f"{AGENTS:,} on-demand agents configured, each its own Swarm service at 0 "
            f"replicas (busybox, a host-mode port each; made in {results['created']:.1f} s, "
            f"removed in {results['removed']:.1f} s), `limits.max_awake: 200`. The "
            f"orchestrator runs as a process (twistd, on CPU {PROXY_CPU}) and reaches "
            f"Docker through a socket that counts its API requests.\n\n"
            f"**Start-up.** Listening {results['listening']:.2f} s after the process "
            f"started, serving (every agent's state known, sampled over "
            f"{results['sampled']} hosts) after {results['serving']:.2f} s "
            f"(target: within {SERVE_TARGET:g} s). The Docker API requests made meanwhile: "
            f"{_calls(results['startup_calls'])}: two reads of every service (at start, "
            f"and when the event stream opened), not one per agent.\n\n"
            f"**Idle**, measured over {IDLE_WINDOW:g} s each (CPU: the process's user and "
            f"system time over the window, in percent of one core; RSS: the most sampled "
            f"once a second):\n\n"
            + table(["", "asleep / awake", "CPU %", "RSS MiB", "Swarm calls/min",
                     "calls"], rows)
            + f"\n\nTargets: CPU under {CPU_TARGET:g}% of a core, RSS under "
            f"{RSS_TARGET_MIB} MiB, no Swarm call per minute for a sleeping agent. A "
            f"sleeping agent has no timer; an awake one probes its health every 10 s (on a "
            f"phase of its own, HTTP to its backend over a fresh connection, no Swarm "
            f"call): with {AWAKE} awake that is {AWAKE // 10} probes a second, which is "
            f"most of what the CPU of the second row pays for "
            f"({awake['cpu'] - asleep['cpu']:.2f}% more); a longer `health.interval` costs "
            f"proportionally less. Awake agents with a task on another node than the "
            f"engine's have their tasks read together every 0.5 s "
            f"(`orchestrator.agents.taskpoll`, docs/events.md); here every task runs on "
            f"the engine's own node, whose events tell of their deaths, so each awake "
            f"agent is read once after its wake and then left to the events.\n\n"
            f"**Waking {AWAKE}** through the proxy, ten clients at a time (each `GET /` "
            f"with `Prefer: wait=60` to its first 200; `proxy.max_concurrent_wakes: 4`): "
            f"median {wakes[len(wakes) // 2]:.1f} s, slowest {wakes[-1]:.1f} s; "
            f"{results['wake_calls']:,} Docker requests for the {AWAKE} wakes "
            f"({results['wake_calls'] / AWAKE:.0f} each: a status read, the scale, and the "
            f"reads while the task starts).\n\n"
            f"**Route lookup** (the proxy's `RouteTable.match`, in the bench's process, "
            f"for a wildcard host three labels under an agent's):\n\n"
            + table(["agents (an exact host and a wildcard each)", "ns per lookup"],
                    [[figure(count), figure(ns)] for count, ns in routes])
        )
        summary = (
            f"scale: {AGENTS:,} agents serving {results['serving']:.2f} s after start; "
            f"idle CPU {asleep['cpu']:.2f}% ({awake['cpu']:.2f}% with {AWAKE} awake), RSS "
            f"{asleep['rss_mib']:.0f} MiB ({awake['rss_mib']:.0f}), Swarm calls/min "
            f"{asleep['calls_per_minute']:.1f} ({awake['calls_per_minute']:.1f})",
        )
        return Section(self.title, body, summary)


def _calls(calls: dict[str, int]) -> str:
    return ", ".join(f"`{kind}` {count}" for kind, count in calls.items()) or "none"


def _yaml(config: dict, placeholders: dict[str, str]) -> str:
    import yaml

    text = yaml.safe_dump(config, sort_keys=False)
    for value, label in placeholders.items():
        text = text.replace(value, label)
    return text


def route_lookups() -> list[tuple[int, float]]:
    """
    Nanoseconds per lookup in a table of C{count} agents (an exact host and a wildcard
    each), for a host that falls to a wildcard.
    """
    from orchestrator.agents.routes import RouteTable

    rows = []
    for count in (10, 1_000, 10_000):
        table_: RouteTable[str] = RouteTable()
        for number in range(count):
            table_.add(f"a{number:04}.scale.localhost", "exact", owner=str(number))
            table_.add(f"*.a{number:04}.scale.localhost", "wildcard", owner=str(number))
        lookups = 200_000
        seconds = min(timeit.repeat(lambda table_=table_: table_.match(
            "x.y.a0007.scale.localhost:8080"), number=lookups, repeat=3))
        rows.append((count, seconds / lookups * 1e9))
    return rows
