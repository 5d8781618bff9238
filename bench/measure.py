"""
Measuring tools: wrk runs and their parsed output, per-CPU busy time, a process's memory
(current, peak, sampled) and CPU time, curl transfers, and percentiles for suites that
time things themselves (the WebSocket suite will).
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import re
import statistics
import threading
import time
from pathlib import Path

import attrs

from bench.harness import BENCH_HOST, LOAD_CPU, Bench, BenchError, Process

# wrk -------------------------------------------------------------------------------------


@attrs.frozen
class WrkResult:
    """
    One wrk run: throughput, latency percentiles (ms), errors, how busy each CPU was
    meanwhile (percent, indexed by CPU number), and, when the backend was watched, how
    many connections it accepted and requests it served during the run, the CPU the
    server under test used (percent of one CPU, all its processes), and the CPU that
    processes the bench did not start used meanwhile (percent of one CPU).
    """

    requests_per_second: float
    latency_ms: dict[int, float]
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_busy: tuple[float, ...]
    output: str
    backend_connections: int | None = None
    backend_requests: int | None = None
    server_cpu: float | None = None
    foreign_cpu: float = 0.0

    @property
    def p50(self) -> float:
        return self.latency_ms[50]

    @property
    def p99(self) -> float:
        return self.latency_ms[99]


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(output: str) -> tuple[float, dict[int, float], int, int, int]:
    """
    Requests/s, the C{--latency} percentiles in ms, total requests, non-2xx/3xx answers
    and socket errors, from wrk's text output.
    """
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rate is None or total is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    latency = {
        int(percent): float(value) * _UNITS_MS[unit]
        for percent, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$",
                                               output, re.MULTILINE)
    }
    if 50 not in latency or 99 not in latency:
        raise BenchError(f"wrk printed no latency distribution (--latency):\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    return (
        float(rate.group(1)),
        latency,
        int(total.group(1)),
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(n) for n in errors.groups()) if errors else 0,
    )


def wrk_command(url: str, *, connections: int, duration: float, host: str | None = BENCH_HOST,
                threads: int = 1, timeout: str = "2s") -> list[str]:
    """
    The wrk command line for a closed-loop run: C{connections} keep-alive connections
    for C{duration} seconds, latency percentiles on.
    """
    argv = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s",
            f"--timeout={timeout}"]
    if host is not None:
        argv += ["-H", f"Host: {host}"]
    return [*argv, url]


def wrk(bench: Bench, url: str, *, connections: int, duration: float, purpose: str,
        host: str | None = BENCH_HOST, cpu: int = LOAD_CPU,
        backend_port: int | None = None, server: Process | None = None) -> WrkResult:
    """
    Run wrk on C{cpu} against C{url}; fail if any answer was not 2xx/3xx. With
    C{backend_port} (an nginx from backend.conf), count what reached the backend; with
    C{server}, measure the CPU it used.
    """
    argv = wrk_command(url, connections=connections, duration=duration, host=host)
    before = nginx_counters(backend_port) if backend_port else None
    server_before = session_cpu_seconds(server.pid) if server else 0.0
    foreign_before = foreign_cpu_ticks(bench)
    started = time.monotonic()
    with CpuMeter() as meter:
        done = bench.run(argv, cpu=cpu, timeout=duration + 30, purpose=purpose)
    elapsed = time.monotonic() - started
    foreign_cpu = foreign_cpu_percent(foreign_before, foreign_cpu_ticks(bench), elapsed)
    server_cpu = None
    if server is not None:
        server_cpu = 100 * (session_cpu_seconds(server.pid) - server_before) / elapsed
    rate, latency, total, non_2xx, socket_errors = parse_wrk(done.stdout)
    if non_2xx:
        raise BenchError(f"{non_2xx} of {total} answers were not 2xx/3xx ({purpose}):\n"
                         f"{done.stdout}")
    backend = (None, None)
    if before is not None:
        after = nginx_counters(backend_port)
        # Less the status request itself (one connection, one request).
        backend = (after[0] - before[0] - 1, after[1] - before[1] - 1)
    return WrkResult(rate, latency, total, non_2xx, socket_errors, meter.busy, done.stdout,
                     *backend, server_cpu, foreign_cpu)


def nginx_counters(port: int) -> tuple[int, int]:
    """
    (connections accepted, requests served) so far by the nginx on C{port}, from its
    C{stub_status} at C{/bench-status}.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/bench-status")
        text = connection.getresponse().read().decode("ascii")
    finally:
        connection.close()
    match = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"unexpected stub_status answer: {text!r}")
    return int(match.group(1)), int(match.group(3))


# CPU -------------------------------------------------------------------------------------


def _cpu_times() -> dict[int, tuple[int, int]]:
    """
    Per CPU: (busy, total) jiffies since boot, from /proc/stat.
    """
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        match = re.match(r"cpu(\d+)\s+(.*)", line)
        if match:
            fields = [int(value) for value in match.group(2).split()]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            total = sum(fields[:8])
            times[int(match.group(1))] = (total - idle, total)
    return times


class CpuMeter:
    """
    How busy each CPU was (percent) during a C{with} block; C{busy[n]} is CPU n.
    """

    busy: tuple[float, ...] = ()

    def __enter__(self) -> CpuMeter:
        self._start = _cpu_times()
        return self

    def __exit__(self, *exc_info) -> None:
        end = _cpu_times()
        busy = []
        for cpu in sorted(end):
            busy_then, total_then = self._start.get(cpu, (0, 0))
            busy_now, total_now = end[cpu]
            elapsed = total_now - total_then
            busy.append(100.0 * (busy_now - busy_then) / elapsed if elapsed else 0.0)
        self.busy = tuple(busy)


def _process_stats():
    """
    For every live process: (pid, parent pid, session, own CPU ticks, reaped children's
    CPU ticks). Processes that vanish while being read are skipped.
    """
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            yield (int(stat.parent.name), int(fields[1]), int(fields[3]),
                   int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
        except (OSError, IndexError, ValueError):
            continue


def session_cpu_seconds(session: int) -> float:
    """
    User plus system CPU time so far of the live processes in C{session} (the bench
    starts each server in its own session: nginx's master and workers, or twistd).
    """
    ticks = sum(own for _, _, sid, own, _ in _process_stats() if sid == session)
    return ticks / os.sysconf("SC_CLK_TCK")


def foreign_cpu_ticks(bench: Bench) -> dict[int, int]:
    """
    CPU ticks so far of each live process the bench did not start (other work on this
    shared machine). Kernel threads are left out: their network work is the bench's own
    traffic.
    """
    ours = {process.pid for process in bench.processes}
    me = os.getpid()
    return {
        pid: own for pid, parent, sid, own, _ in _process_stats()
        if sid not in ours and pid not in (me, 2) and parent not in (me, 2)
    }


def foreign_cpu_percent(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    """
    The CPU other processes used between two L{foreign_cpu_ticks} snapshots, in percent
    of one CPU. A lower bound: processes that started and ended in between are missed
    (counting reaped children instead would dump a whole test run's CPU into a window).
    """
    ticks = sum(max(0, own - before.get(pid, 0)) for pid, own in after.items())
    return 100 * ticks / os.sysconf("SC_CLK_TCK") / seconds


def process_cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} so far.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Memory ----------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    """
    A C{kB} field of /proc/<pid>/status (C{VmRSS}, C{VmHWM}, ...).
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """
    Reset VmHWM to the current RSS (Linux >= 4.0, writing 5 to clear_refs), so the next
    peak belongs to what runs next. Returns whether it worked.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """
    Samples a process's VmRSS every C{interval} seconds in a thread while the C{with}
    block runs; C{peak_kib} is the largest sample (a cross-check of VmHWM).
    """

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, BenchError):
                self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# Transfers -------------------------------------------------------------------------------


@attrs.frozen
class Transfer:
    """
    One curl transfer: the status, bytes each way, and the wall time.
    """

    code: int
    downloaded: int
    uploaded: int
    seconds: float

    @property
    def bytes(self) -> int:
        return max(self.downloaded, self.uploaded)

    @property
    def mib_per_second(self) -> float:
        return self.bytes / (1024 * 1024) / self.seconds if self.seconds else 0.0


def curl_transfer(bench: Bench, url: str, *, purpose: str, upload: Path | None = None,
                  answer: Path | None = None, host: str | None = BENCH_HOST,
                  timeout: float = 120, cpu: int = LOAD_CPU) -> Transfer:
    """
    Download C{url}, or upload the file C{upload} to it (PUT, streamed by curl), and
    report what curl measured. The response body goes to C{answer}, or /dev/null.
    """
    argv = ["curl", "-sS", "--max-time", f"{timeout:g}", "-o", str(answer or "/dev/null"),
            "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"]
    if host is not None:
        argv += ["-H", f"Host: {host}"]
    if upload is not None:
        argv += ["-T", str(upload)]
    argv.append(url)
    done = bench.run(argv, cpu=cpu, timeout=timeout + 10, purpose=purpose)
    code, downloaded, uploaded, seconds = done.stdout.split()
    return Transfer(int(code), int(downloaded), int(uploaded), float(seconds))


# Statistics ------------------------------------------------------------------------------


def percentile(samples: list[float], percent: float) -> float:
    """
    The C{percent}-th percentile of C{samples} (nearest rank), e.g. RTTs a suite timed.
    """
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = math.ceil(percent / 100 * len(ordered)) - 1
    return ordered[max(0, min(len(ordered) - 1, rank))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def wait(seconds: float) -> None:
    """
    Let a server settle (e.g. between a warm-up and a measured run).
    """
    time.sleep(seconds)
