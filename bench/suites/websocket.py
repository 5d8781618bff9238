"""
WebSocket relay: echo messages/s and round-trip time, and memory per idle socket.

Three paths to the same echo backend (the demo agent's Autobahn echo, on the load CPU):
directly, through nginx relaying upgrades (C{bench/nginx/websocket.conf}), and through the
orchestrator's relay. Load: L{bench.wsload}, closed loop, on the load CPU; the proxy has
CPU 1 to itself. Runs are interleaved across targets for C{rounds} rounds.

Memory: N idle sockets opened through the proxy (raw handshakes from this process, held
open, nothing sent), the proxy's VmRSS growth divided by N; for 1,000 sockets and for as
many as the file-descriptor limit allows up to 10,000 (the relay holds two descriptors
per socket).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import attrs
import yaml

from bench.harness import (
    AGENT_NAME,
    BENCH_HOST,
    LOAD_CPU,
    PROXY_CPU,
    REPO,
    Bench,
    BenchAgent,
    BenchError,
    Server,
    free_port,
    orchestrator_config,
    wait_for_port,
    wait_until_ready,
)
from bench.measure import CpuMeter, median, status_kib
from bench.suites.base import Options, Section, number, table

#: The goals: at least this fraction of nginx's messages/s, at most this much per socket.
GOAL_RATIO = 0.8
GOAL_KIB_PER_SOCKET = 15.0
#: Sockets held for the memory measurements (the larger one bounded by descriptors).
IDLE_COUNTS = (1000, 10000)
ECHO = REPO / "deploy" / "demo-agent" / "agent.py"


@attrs.frozen
class EchoResult:
    messages_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_busy: tuple[float, ...]


class WebSocketSuite:
    """
    Echo throughput and latency on three paths, then memory per idle socket.
    """

    name = "websocket"
    title = "WebSocket relay"

    def run(self, bench: Bench, options: Options) -> Section:
        descriptors = raise_descriptor_limit()
        # Two descriptors per socket in the proxy, and room: nginx runs out of
        # worker_connections some way below the limit.
        most = min(IDLE_COUNTS[-1], descriptors // 2 - 2000)
        with bench.scope():
            echo = start_echo(bench)
            nginx = bench.nginx("nginx-ws", "websocket.conf", cpu=PROXY_CPU,
                                backend_port=echo.port, nofile=descriptors,
                                connections=descriptors)
            relay = start_orchestrator(bench, echo.port, max_connections=2 * most)
            targets = [("direct", echo), ("nginx", nginx), ("orchestrator", relay)]
            for name, server in targets:
                echo_run(bench, server.port, connections=options.connections,
                         duration=options.warmup, purpose=f"warm-up: {name}")
            results: dict[str, list[EchoResult]] = {name: [] for name, _ in targets}
            for round_number in range(1, options.rounds + 1):
                for name, server in targets:
                    results[name].append(echo_run(
                        bench, server.port, connections=options.connections,
                        duration=options.duration, purpose=f"round {round_number}: {name}"))
        memory = {}
        for count in sorted({IDLE_COUNTS[0], most}):
            # Fresh processes for each count: memory freed by an earlier measurement would
            # be reused, and the growth understated.
            with bench.scope():
                echo = start_echo(bench)
                proxies = [
                    ("nginx", bench.nginx("nginx-ws", "websocket.conf", cpu=PROXY_CPU,
                                          backend_port=echo.port, nofile=descriptors,
                                          connections=descriptors)),
                    ("orchestrator", start_orchestrator(bench, echo.port,
                                                        max_connections=2 * most)),
                ]
                for name, server in proxies:
                    try:
                        memory[name, count] = idle_socket_bytes(server, count)
                    except OSError as error:
                        raise BenchError(f"{count} idle sockets through {name}: {error}; "
                                         f"log: {server.process.log}") from None
        return self._section(results, memory, most, options)

    def _section(self, results, memory, most: int, options: Options) -> Section:
        def rate(name: str) -> float:
            return median([result.messages_per_second for result in results[name]])

        rows = []
        for name in results:
            runs = results[name]
            rows.append([
                name,
                number(rate(name)),
                f"{number(min(r.messages_per_second for r in runs))} - "
                f"{number(max(r.messages_per_second for r in runs))}",
                number(median([r.p50_ms for r in runs]), 2),
                number(median([r.p99_ms for r in runs]), 2),
                f"{median([r.cpu_busy[LOAD_CPU] for r in runs]):.0f}%",
                f"{median([r.cpu_busy[PROXY_CPU] for r in runs]):.0f}%",
            ])
        ratio = rate("orchestrator") / rate("nginx") if rate("nginx") else 0.0
        memory_rows = [
            [f"{count:,}", *(f"{memory[name, count] / 1024:.1f} KiB"
                             for name in ("nginx", "orchestrator"))]
            for count in sorted({count for _, count in memory})
        ]
        worst = max(value for (name, _), value in memory.items() if name == "orchestrator")
        body = "\n\n".join([
            f"Echo of {options.connections} closed-loop sockets, 64-byte text messages, "
            f"{options.duration:g} s per run, {options.rounds} rounds (median, range). The "
            "echo backend is the demo agent's Autobahn echo on CPU 0 with the load "
            "generator (`bench/wsload.py`); the proxy has CPU 1.",
            table(["Path", "messages/s", "range", "RTT p50 ms", "RTT p99 ms", "CPU 0",
                   "CPU 1"], rows),
            f"Orchestrator / nginx: **{ratio:.2f}x** (goal >= {GOAL_RATIO}x). "
            + ceiling_note(results),
            "Memory per idle socket (VmRSS growth of the proxy's processes over N sockets "
            f"held open; at most {most:,} here: the relay holds two descriptors per socket "
            "and the hard limit on descriptors is "
            f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,}):",
            table(["Sockets", "nginx", "orchestrator"], memory_rows),
            f"Worst orchestrator figure: **{worst / 1024:.1f} KiB** per socket "
            f"(goal <= {GOAL_KIB_PER_SOCKET:g} KiB).",
        ])
        summary = (
            f"WebSocket echo: orchestrator {number(rate('orchestrator'))} msg/s, nginx "
            f"{number(rate('nginx'))}, direct {number(rate('direct'))} ({ratio:.2f}x nginx)",
            f"WebSocket memory: {worst / 1024:.1f} KiB per idle relayed socket",
        )
        return Section(self.title, body, summary)


def ceiling_note(results: dict[str, list[EchoResult]]) -> str:
    """
    Which side limited the runs, and the relay's own ceiling estimated from its CPU.
    """
    load = median([r.cpu_busy[LOAD_CPU] for runs in results.values() for r in runs])
    relay = results["orchestrator"]
    busy = median([r.cpu_busy[PROXY_CPU] for r in relay])
    rate = median([r.messages_per_second for r in relay])
    side = "the load side (CPU 0: client and echo backend)" if load >= 90 else "latency"
    ceiling = f" about {number(rate * 100 / busy)} msg/s" if busy else " unknown"
    return (f"What limited the runs: {side}. The relay used {busy:.0f}% of CPU 1 for "
            f"{number(rate)} msg/s; its own ceiling on one core is{ceiling}.")


def raise_descriptor_limit() -> int:
    """
    Raise this process's descriptor limit (and so its children's) to the hard limit.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def start_echo(bench: Bench) -> Server:
    port = free_port()
    process = bench.spawn("ws-echo", [sys.executable, str(ECHO)], cpu=LOAD_CPU,
                          env={**os.environ, "PORT": str(port)},
                          purpose="ws-echo: the demo agent (Autobahn echo at /ws)")
    wait_for_port(process, port, timeout=15)
    return Server("ws-echo", port, process, bench.tmp)


def start_orchestrator(bench: Bench, backend_port: int, *, max_connections: int) -> Server:
    """
    The orchestrator in front of the echo, allowing C{max_connections} sockets.
    """
    port, admin_port = free_port(), free_port()
    config = yaml.safe_load(orchestrator_config(
        port, admin_port, (BenchAgent(AGENT_NAME, BENCH_HOST, backend_port),)))
    config["agents"][AGENT_NAME]["websocket"] = {"max_connections": max_connections}
    config["agents"][AGENT_NAME]["health"]["path"] = "/health"
    process, directory = bench.twistd_orchestrator("orchestrator-ws", config, {
        str(port): "<proxy port>", str(admin_port): "<admin port>",
        str(backend_port): "<echo port>"})
    wait_until_ready(process, port, BENCH_HOST, timeout=30)
    return Server("orchestrator-ws", port, process, directory)


def echo_run(bench: Bench, port: int, *, connections: int, duration: float,
             purpose: str) -> EchoResult:
    argv = [sys.executable, "-m", "bench.wsload", "--port", str(port), "--host", BENCH_HOST,
            "--connections", str(connections), "--duration", str(duration)]
    with CpuMeter() as cpu:
        done = bench.run(argv, cpu=LOAD_CPU, timeout=duration + 60, purpose=purpose)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"bench.wsload printed no result: {done.stdout[-500:]}"
                         f"{done.stderr[-1500:]}") from None
    if result["lost_connections"]:
        raise BenchError(f"{purpose}: {result['lost_connections']} sockets were closed")
    return EchoResult(result["messages_per_second"], result["p50_ms"], result["p99_ms"],
                      cpu.busy)


def session_rss_kib(session: int) -> int:
    """
    VmRSS of all processes in C{session} (nginx's master and worker; twistd alone).
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError, BenchError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == session:
                total += status_kib(int(stat.parent.name), "VmRSS")
    return total


def idle_socket_bytes(server: Server, count: int) -> float:
    """
    Open C{count} idle WebSockets through C{server}, hold them, and return its VmRSS
    growth per socket in bytes. A few sockets are opened first so that first-use costs
    are not counted. The sockets answer pings, as a browser's idle tab does: the relay
    drops peers that do not.
    """
    with IdleSockets(server.port) as sockets:
        sockets.open(50)
        time.sleep(1)
        before = session_rss_kib(server.process.pid)
        sockets.open(count)
        time.sleep(2)
        after = session_rss_kib(server.process.pid)
        if sockets.lost:
            raise BenchError(f"{sockets.lost} idle sockets through {server.name} were closed")
    time.sleep(2)
    return (after - before) * 1024 / count


class _IdleSocket(asyncio.Protocol):
    """
    An open WebSocket that sends nothing and answers pings.
    """

    def __init__(self, owner: IdleSockets) -> None:
        self.owner = owner
        self.buffer = b""
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16))
        transport.write(b"GET /ws HTTP/1.1\r\nHost: " + BENCH_HOST.encode()
                        + b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.opened.done():
            head, found, buffer = buffer.partition(b"\r\n\r\n")
            if not found:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(BenchError(f"refused: {head[:100]!r}"))
                return
            self.opened.set_result(None)
        # Frames from the relay are unmasked and, here, only pings (short).
        while len(buffer) >= 2 and len(buffer) >= 2 + (buffer[1] & 0x7F):
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            payload, buffer = buffer[2:2 + length], buffer[2 + length:]
            if opcode == 9:
                mask = os.urandom(4)
                self.transport.write(bytes((0x8A, 0x80 | length)) + mask + bytes(
                    b ^ mask[i % 4] for i, b in enumerate(payload)))
        self.buffer = buffer

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or BenchError("closed during the handshake"))
        elif not self.owner.closing:
            self.owner.lost += 1


class IdleSockets:
    """
    Idle WebSockets through 127.0.0.1:C{port}, held by an asyncio loop in a thread.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.lost = 0
        self.closing = False
        self._sockets: list[_IdleSocket] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> IdleSockets:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.closing = True

        def close_all() -> None:
            for sock in self._sockets:
                sock.transport.close()

        self._loop.call_soon_threadsafe(close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def open(self, count: int) -> None:
        """
        Open C{count} more, 40 handshakes at a time (listen backlogs are 50 by default:
        more would be SYNs dropped and retried a second later); return once all are open.
        """
        future = asyncio.run_coroutine_threadsafe(self._open(count), self._loop)
        future.result(timeout=300)

    async def _open(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, count, 40):
            batch = []
            for _ in range(min(40, count - start)):
                _, sock = await loop.create_connection(lambda: _IdleSocket(self),
                                                       "127.0.0.1", self.port)
                self._sockets.append(sock)
                batch.append(sock.opened)
            await asyncio.wait_for(asyncio.gather(*batch), 60)
