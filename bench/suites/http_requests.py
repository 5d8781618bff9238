"""
HTTP requests per second and latency: wrk against the backend directly (the ceiling),
through nginx as a keep-alive reverse proxy (the peer), and through the orchestrator.
"""

from __future__ import annotations

import attrs

from bench.harness import BENCH_HOST, LOAD_CPU, PROXY_CPU, Bench, BenchError, Server
from bench.measure import WrkResult, curl_transfer, median, wrk
from bench.suites.base import Options, Section, number, table

#: The goal: the orchestrator serves at least this fraction of nginx's requests/s.
GOAL_RATIO = 0.25
#: A CPU at least this busy (percent) is taken to be what limited a run.
BUSY = 90.0
#: CPU used by other processes during a run (percent of one CPU) above which the run
#: counts as noisy.
NOISE_LIMIT = 10.0


@attrs.frozen
class Target:
    """
    What wrk measures: a C{name} for the tables, how it is set up, and its server.
    """

    name: str
    setup: str
    server: Server
    backend: Server


def bottleneck(results: list[WrkResult]) -> str:
    """
    Which side limited the runs: the server under test (CPU 1 saturated), the load side
    (CPU 0: wrk and the backend), or both.
    """
    load = median([result.cpu_busy[LOAD_CPU] for result in results]) >= BUSY
    server = median([result.cpu_busy[PROXY_CPU] for result in results]) >= BUSY
    return {(False, True): "server (CPU 1)", (True, False): "load side (CPU 0)",
            (True, True): "both CPUs", (False, False): "neither (latency)"}[(load, server)]


def per_thousand(results: list[WrkResult]) -> float:
    """
    Backend connections opened per 1,000 backend requests over C{results}.
    """
    connections = sum(result.backend_connections or 0 for result in results)
    requests = sum(result.backend_requests or 0 for result in results)
    return 1000 * connections / requests if requests else 0.0


class HttpSuite:
    """
    Closed-loop wrk runs (C{connections} keep-alive connections, one wrk thread on CPU 0),
    interleaved across targets for C{rounds} rounds, then one-connection runs for the
    latency a single request adds.
    """

    name = "http"
    title = "HTTP requests"

    def run(self, bench: Bench, options: Options) -> Section:
        with bench.scope():
            targets = self._start(bench)
            for target in targets:
                self._check(bench, target)
            for target in targets:
                wrk(bench, target.server.url(), connections=options.connections,
                    duration=options.warmup, purpose=f"warm-up: {target.name}")
            loaded: dict[str, list[WrkResult]] = {target.name: [] for target in targets}
            for round_number in range(1, options.rounds + 1):
                for target in targets:
                    loaded[target.name].append(wrk(
                        bench, target.server.url(), connections=options.connections,
                        duration=options.duration, backend_port=target.backend.port,
                        server=target.server.process,
                        purpose=f"round {round_number}: {target.name}"))
            single = {
                target.name: wrk(bench, target.server.url(), connections=1,
                                 duration=options.single_duration,
                                 purpose=f"one connection: {target.name}")
                for target in targets
            }
        for name, results in loaded.items():
            (bench.out / f"wrk-{name}.txt").write_text(
                "\n".join(result.output for result in results))
        return self._section(targets, loaded, single, options)

    def _start(self, bench: Bench) -> list[Target]:
        # The ceiling gets CPU 1 to itself, like the proxies; behind the proxies the
        # backend shares CPU 0 with wrk, so the proxy under test is alone on its CPU.
        ceiling = bench.nginx("backend-alone", "backend.conf", cpu=PROXY_CPU)
        backend = bench.nginx("backend", "backend.conf", cpu=LOAD_CPU)
        peer = bench.nginx("nginx-proxy", "proxy.conf", cpu=PROXY_CPU,
                           backend_port=backend.port, upload_port=backend.port)
        orchestrator = bench.orchestrator("orchestrator", backend_port=backend.port)
        return [
            Target("direct", "nginx `return 200 \"ok\"` on CPU 1", ceiling, ceiling),
            Target("nginx proxy", "nginx on CPU 1 -> backend nginx on CPU 0", peer, backend),
            Target("orchestrator", "orchestrator on CPU 1 -> backend nginx on CPU 0",
                   orchestrator, backend),
        ]

    def _check(self, bench: Bench, target: Target) -> None:
        answer = bench.tmp / "answer"
        transfer = curl_transfer(bench, target.server.url(), answer=answer, timeout=5,
                                 purpose=f"check: {target.name} answers 200 ok")
        body = answer.read_bytes()
        if transfer.code != 200 or body != b"ok":
            raise BenchError(f"{target.name} answered {transfer.code} {body[:200]!r}")

    def _section(self, targets: list[Target], loaded: dict[str, list[WrkResult]],
                 single: dict[str, WrkResult], options: Options) -> Section:
        def rate(name: str) -> float:
            return median([result.requests_per_second for result in loaded[name]])

        def best(name: str) -> float:
            return max(result.requests_per_second for result in loaded[name])

        def latency(name: str, percent: int) -> float:
            return median([result.latency_ms[percent] for result in loaded[name]])

        rows = []
        for target in targets:
            results = loaded[target.name]
            rates = [result.requests_per_second for result in results]
            rows.append([
                target.name, target.setup, number(rate(target.name)),
                f"{number(min(rates))} - {number(max(rates))}",
                number(latency(target.name, 50), 2), number(latency(target.name, 99), 2),
                number(median([result.cpu_busy[LOAD_CPU] for result in results])) + "%",
                number(median([result.cpu_busy[PROXY_CPU] for result in results])) + "%",
                number(median([result.server_cpu for result in results])) + "%",
                number(max(result.foreign_cpu for result in results)) + "%",
                number(sum(result.socket_errors for result in results)),
                number(per_thousand(results), 1),
                bottleneck(results),
            ])
        single_rows = [
            [target.name, number(single[target.name].requests_per_second),
             number(single[target.name].p50, 3), number(single[target.name].p99, 3)]
            for target in targets
        ]
        orchestrator, peer, direct = rate("orchestrator"), rate("nginx proxy"), rate("direct")
        to_peer, to_direct = orchestrator / peer, orchestrator / direct
        # The least disturbed run of each target: on a shared machine the best of N is the
        # better estimate of capacity, the median the more typical figure.
        best_peer = best("orchestrator") / best("nginx proxy")
        best_direct = best("orchestrator") / best("direct")
        added_loaded = latency("orchestrator", 50) - latency("direct", 50)
        added_single = single["orchestrator"].p50 - single["direct"].p50
        added_single_peer = single["nginx proxy"].p50 - single["direct"].p50
        noise = max(result.foreign_cpu for results in loaded.values() for result in results)
        verdict = (f"goal met ({to_peer:.2f}x >= {GOAL_RATIO}x)" if to_peer >= GOAL_RATIO else
                   f"goal NOT met: {to_peer:.2f}x, {GOAL_RATIO / to_peer:.1f} times short of "
                   f"{GOAL_RATIO}x")
        noise_note = (f"Noise: processes the bench did not start used up to {noise:.0f}% of "
                      f"a CPU during a measured run; treat the numbers with care."
                      if noise > NOISE_LIMIT else
                      f"Quiet machine: other processes used at most {noise:.0f}% of a CPU "
                      f"during the measured runs.")
        summary = (
            f"HTTP: orchestrator {number(orchestrator)} req/s = **{to_peer:.2f}x nginx as a "
            f"proxy** ({number(peer)} req/s) and {to_direct:.3f}x direct ({number(direct)} "
            f"req/s), medians; best runs: {best_peer:.2f}x and {best_direct:.3f}x; {verdict}.",
            f"HTTP latency added by the orchestrator (p50, vs direct): "
            f"{added_single:.3f} ms with one connection, {added_loaded:.2f} ms with "
            f"{options.connections} connections.",
            noise_note,
        )
        body = "\n\n".join([
            f"wrk, {options.connections} keep-alive connections, 1 thread, "
            f"{options.duration:g} s per run, {options.rounds} round(s) interleaved across the "
            f"targets (after a {options.warmup:g} s warm-up each); the table gives the median "
            f"run and the range of requests/s. Every request sends `Host: {BENCH_HOST}` and "
            f"gets `200 ok` (a run with any other answer fails the bench). CPU columns: how "
            f"busy each CPU was during the run (CPU 0: wrk + backend, CPU 1: the server "
            f"under test), how much of one CPU the server under test used itself (the rest "
            f"of CPU 1 is mostly the kernel's loopback work), and how much CPU processes "
            f"the bench did not start used at most during a run (the machine is shared; "
            f"a lower bound, short-lived processes are missed). Bound by: the CPU(s) at "
            f"{BUSY:g}% or more; when the load side (CPU 0) is saturated, the number is "
            f"a floor for that target, not its limit. "
            f"Backend connections: TCP connections the backend nginx accepted "
            f"per 1,000 requests it served during the runs (its `stub_status`); a "
            f"keep-alive proxy opens almost none after the warm-up, direct runs count wrk's "
            f"own {options.connections} per run.",
            table(["Target", "Setup", "Requests/s", "Range", "p50 ms", "p99 ms", "CPU 0",
                   "CPU 1", "Server CPU", "Others (max)", "Socket errors",
                   "Backend connections / 1k requests", "Bound by"], rows),
            f"- orchestrator / nginx proxy: **{to_peer:.3f}x** ({verdict}); best run / best "
            f"run: {best_peer:.3f}x\n"
            f"- orchestrator / direct: **{to_direct:.3f}x**; best run / best run: "
            f"{best_direct:.3f}x\n"
            f"- added p50 latency, orchestrator - direct: **{added_loaded:.2f} ms** at "
            f"{options.connections} connections. In a closed loop p50 is mostly queueing "
            f"(about connections / throughput), so this measures throughput again; the "
            f"one-connection runs below show the cost of one request.",
            f"One connection, {options.single_duration:g} s each (no queueing: the latency "
            f"of a single request through each path):",
            table(["Target", "Requests/s", "p50 ms", "p99 ms"], single_rows),
            f"- added p50 latency with one connection: orchestrator - direct "
            f"**{added_single:.3f} ms**; nginx proxy - direct {added_single_peer:.3f} ms.",
        ])
        return Section(self.title, body, summary)
