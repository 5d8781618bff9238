"""
Eviction under the real Swarm: six agents whose services reserve 64 MiB each, under a
budget of 192 MiB (three awake at once).

- Waking them in turn: rounds from all asleep, three wakes into free room, then two that
  each need an eviction first; the wake times, with and without an eviction in front.
- Busy agents: three awake and kept busy (a request in flight, a WebSocket sending
  frames, a busy lease taken through the agents' API); a fourth wake must wait (the
  client told "capacity") and nobody may be evicted, until the lease is released.
- All along, the engine's running containers are sampled every 50 ms: what they reserve
  together must never exceed the budget; and the orchestrator's events say who was
  evicted, for whom.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import statistics
import threading
import time
from pathlib import Path

from bench.fleet import (
    ContainerSampler,
    create_services,
    engine,
    free_ports,
    health,
    remove_services,
    request,
    running_services,
    timed_wake,
    until_no_container,
    wait_for,
)
from bench.harness import Bench, BenchError, free_port, wait_for_port
from bench.suites.base import Options, Section, number, table

MiB = 1024 * 1024
RESERVATION = 64 * MiB
BUDGET = 192 * MiB
#: The busybox agents woken in turn, and the demo agent (a WebSocket echo).
NAMES = ("ev0", "ev1", "ev2", "ev3", "ev4")
WS = "ws"
#: Rounds of waking in turn; each starts from all asleep (the idle timeout).
ROUNDS = 3
IDLE_TIMEOUT = 15
LEASE_TOKEN = "bench-lease-token-0123456789"
#: How long the fourth wake is watched waiting while every awake agent is busy.
BUSY_WATCH = 8.0


def host(name: str) -> str:
    return f"{name}.evict.localhost"


class FrameSender:
    """
    A WebSocket client through the orchestrator that sends a text frame every half
    second until stopped (a minimal client written here: the bench's Python has no
    WebSocket library), so its agent relays frames all along.
    """

    def __init__(self, port: int, host_name: str) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host_name}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self._sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 101"):
            raise BenchError(f"the WebSocket handshake failed: {answer[:200]!r}")
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _frame(self, text: bytes) -> bytes:
        mask = os.urandom(4)
        payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(text))
        return bytes([0x81, 0x80 | len(text)]) + mask + payload

    def _run(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self._sock.sendall(self._frame(b"still here"))
                self.sent += 1
                try:
                    self._sock.recv(4096)  # the echo (or a close): read and drop
                except TimeoutError:
                    pass
            except OSError:
                return
            self._stop.wait(0.5)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._sock.close()
        except OSError:
            pass


class SlowUpload:
    """
    A request whose body is only half sent: in flight until L{finish}.
    """

    def __init__(self, port: int, host_name: str) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.sendall(f"POST /cgi-bin/echo HTTP/1.1\r\nHost: {host_name}\r\n"
                           f"Content-Length: 10\r\nConnection: close\r\n\r\nhalf!".encode())

    def finish(self) -> bytes:
        self._sock.sendall(b"done!")
        answer = b""
        with self._sock:
            while chunk := self._sock.recv(4096):
                answer += chunk
        return answer


class EvictionSuite:
    """
    Needs the Docker engine in swarm mode (dev/engine) and the test and demo images.
    """

    name = "eviction"
    title = "Eviction under the real Swarm"

    def run(self, bench: Bench, options: Options) -> Section:
        helpers, client = engine()
        helpers.ensure_demo_image(client)
        services = {name: helpers.unique_name(f"bench-evict-{name}") for name in
                    (*NAMES, WS)}
        ports = dict(zip(services, free_ports(len(services)), strict=True))
        create_services(helpers, client, [services[n] for n in NAMES], [ports[n] for n in NAMES],
                        memory_reservation=RESERVATION)
        create_services(helpers, client, [services[WS]], [ports[WS]],
                        memory_reservation=RESERVATION, image=helpers.DEMO_IMAGE,
                        target_port=helpers.DEMO_PORT, stop_grace=2)
        agent_of = {service: name for name, service in services.items()}
        try:
            with bench.scope(), ContainerSampler(client, set(agent_of)) as sampler:
                base, agents_url, events = self._orchestrator(bench, services, ports)
                rounds = [self._round(base, client, services) for _ in range(ROUNDS)]
                busy = self._busy(base, agents_url, client, services, events)
        finally:
            remove_services(helpers, client, list(services.values()))
        log = _read_events(events)
        evicted = [(event["agent"], event.get("for_agent"))
                   for event in log if event["event"] == "agent.evicted"]
        return self._section(rounds, busy, sampler, agent_of, evicted, _phases(log))

    # The orchestrator -------------------------------------------------------------------

    def _orchestrator(self, bench: Bench, services: dict[str, str], ports: dict[str, int]):
        port, admin_port, agents_port = free_port(), free_port(), free_port()
        events = bench.tmp / "eviction-events.jsonl"
        token = bench.tmp / "ev1-token"
        token.write_text(LEASE_TOKEN)
        agents = {}
        for name, service in services.items():
            agents[name] = {
                "service": service,
                "backend": f"http://127.0.0.1:{ports[name]}",
                "hosts": [host(name)],
                "idle": {"timeout": f"{IDLE_TIMEOUT}s", "drain_timeout": "1s"},
                **({"health": {"path": "/health"}} if name == WS else {}),
            }
        agents["ev1"]["token_file"] = str(token)
        config = {
            "listen": {"proxy": f"tcp:{port}:interface=127.0.0.1",
                       "admin": f"tcp:{admin_port}:interface=127.0.0.1",
                       "agents": f"tcp:{agents_port}:interface=127.0.0.1"},
            "shutdown": {"drain_timeout": "2s"},
            "events": {"log_file": str(events)},
            "limits": {"memory": "192MiB", "min_awake": "0s", "min_idle": "10s",
                       "queue_timeout": "90s"},
            "agents": agents,
        }
        placeholders = {str(port): "<proxy port>", str(admin_port): "<admin port>",
                        str(agents_port): "<agents' API port>", str(token): "<token file>",
                        str(events): "<events file>"}
        for name, service in services.items():
            placeholders[service] = f"<{name} service>"
            placeholders[str(ports[name])] = f"<{name} port>"
        process, _ = bench.twistd_orchestrator("eviction-orchestrator", config, placeholders)
        wait_for_port(process, port, timeout=20)
        base = f"http://127.0.0.1:{port}"
        for name in services:
            wait_for(lambda name=name: health(base, host(name))["status"] == "sleeping",
                     f"{name} reconciled", timeout=20)
        return base, f"http://127.0.0.1:{agents_port}", events

    # Waking in turn ---------------------------------------------------------------------

    def _all_asleep(self, base: str, client, services: dict[str, str]) -> None:
        for name in services:
            wait_for(lambda name=name: health(base, host(name))["status"] == "sleeping",
                     f"{name} asleep", timeout=IDLE_TIMEOUT + 60, interval=0.2)
        until_no_container(client, set(services.values()))
        time.sleep(1)

    def _round(self, base: str, client, services: dict[str, str]) -> dict[str, list[float]]:
        self._all_asleep(base, client, services)
        times: dict[str, list[float]] = {"free": [], "evicting": []}
        for index, name in enumerate(NAMES):
            times["free" if index < 3 else "evicting"].append(timed_wake(base, host(name)))
        return times

    # Busy agents ------------------------------------------------------------------------

    def _busy(self, base: str, agents_url: str, client, services: dict[str, str],
              events: Path) -> dict:
        self._all_asleep(base, client, services)
        events_before = len(_read_events(events))
        port = int(base.rsplit(":", 1)[1])
        for name in (WS, "ev0", "ev1"):
            timed_wake(base, host(name))
        frames = FrameSender(port, host(WS))
        upload = SlowUpload(port, host("ev0"))
        status, _, body = request(agents_url + "/api/lease", "localhost", {
            "Authorization": f"Bearer {LEASE_TOKEN}", "Content-Type": "application/json"},
            method="POST", data=json.dumps({"seconds": 300, "reason": "bench"}).encode())
        if status != 201:
            raise BenchError(f"the lease was refused ({status}): {body[:200]!r}")
        lease = json.loads(body)["id"]
        try:
            asked = time.monotonic()
            waker = threading.Thread(target=lambda: results.append(timed_wake(
                base, host("ev2"), timeout=120)), daemon=True)
            results: list[float] = []
            waker.start()
            watched = []
            watch_end = time.monotonic() + BUSY_WATCH
            while time.monotonic() < watch_end:
                watched.append(health(base, host("ev2")))
                time.sleep(0.25)
            awake_while_busy = running_services(client, set(services.values()))
            released = time.monotonic()
            request(agents_url + f"/api/lease/{lease}", "localhost",
                    {"Authorization": f"Bearer {LEASE_TOKEN}"}, method="DELETE")
            waker.join(timeout=120)
            if not results:
                raise BenchError("the waiting wake did not end after the lease was released")
            answered = asked + results[0]
            still = {name: health(base, host(name))["status"] for name in (WS, "ev0", "ev1")}
            upload_answer = upload.finish()
        finally:
            frames.close()
        return {
            "reasons": {body.get("reason") for body in watched},
            "states": {body["status"] for body in watched},
            "awake_while_busy": awake_while_busy,
            "waited": answered - asked,
            "after_release": answered - released,
            "still": still,
            "frames": frames.sent,
            "upload_ok": upload_answer.startswith(b"HTTP/1.1 200"),
            "evicted": [(event["agent"], event.get("for_agent"))
                        for event in _read_events(events)[events_before:]
                        if event["event"] == "agent.evicted"],
        }

    # The report -------------------------------------------------------------------------

    def _section(self, rounds, busy, sampler, agent_of, evicted, phases) -> Section:
        free = [t for r in rounds for t in r["free"]]
        evicting = [t for r in rounds for t in r["evicting"]]
        if not sampler.samples:
            raise BenchError("the engine's containers were never sampled")
        worst = max(sampler.samples, key=lambda sample: len(sample.running))
        most = len(worst.running) * RESERVATION
        over = [s for s in sampler.samples if len(s.running) * RESERVATION > BUDGET]
        # While busy, only ev1 may be evicted, and only once its lease is released.
        wrongly = [(agent, for_agent) for agent, for_agent in busy["evicted"]
                   if agent != "ev1"]
        rows = [
            ["into free room", str(len(free)), number(statistics.median(free) * 1000),
             number(min(free) * 1000), number(max(free) * 1000)],
            ["with an eviction first", str(len(evicting)),
             number(statistics.median(evicting) * 1000), number(min(evicting) * 1000),
             number(max(evicting) * 1000)],
        ]
        awake_names = sorted(agent_of[s] for s in busy["awake_while_busy"])
        body = (
            f"Six on-demand agents whose Swarm services reserve {RESERVATION // MiB} MiB each "
            f"(`--reserve-memory`; five busybox, one the demo agent for WebSockets) under "
            f"`limits.memory: 192MiB` (three awake at once), `min_awake: 0s`, "
            f"`min_idle: 10s`. The orchestrator runs as a process (twistd) on the real "
            f"swarm; every wake is a client's `GET /` with `Prefer: wait=60`, timed to its "
            f"first 200.\n\n"
            f"**Waking in turn** ({len(rounds)} rounds, each from all asleep: three wakes "
            f"into free room, then two that each evict the least recently used first). "
            f"Milliseconds from the first request to the first 200:\n\n"
            + table(["wake", "n", "median ms", "min ms", "max ms"], rows)
            + f"\n\nAn eviction adds the evicted agent's drain (its connections asked to go, "
            f"`drain_timeout: 1s` at most), its scale-down, and the wait until its "
            f"container has exited (busybox ignores SIGTERM as PID 1: the test services' "
            f"1 s stop grace, then SIGKILL), before the woken agent is scaled up. From "
            f"the orchestrator's events (medians over the wakes that evicted): the wake's "
            f"`evicting` phase took {phases['evicting']:,.0f} ms, of which the evicted "
            f"agent's drain (from `agent.evicted` to its `agent.sleep`) "
            f"{phases['drain']:,.0f} ms; the rest is Swarm stopping the container and "
            f"recording it; then `scheduling` {phases['scheduling']:,.0f} ms and "
            f"`probing` {phases['probing']:,.0f} ms, as in any wake.\n\n"
            f"**The budget, sampled from the engine.** {len(sampler.samples):,} samples of "
            f"the running containers (every 50 ms, {sampler.errors} failed reads): at most "
            f"{len(worst.running)} ran at once, reserving {most // MiB} MiB of the "
            f"{BUDGET // MiB} MiB budget; samples over the budget: {len(over)}.\n\n"
            f"**Busy agents are never evicted.** With `{WS}` relaying a frame every 0.5 s "
            f"({busy['frames']} sent), `ev0` holding a request in flight (half an upload) "
            f"and `ev1` holding a busy lease (the agents' API), a wake of `ev2` waited: for "
            f"{BUSY_WATCH:g} s its health said {sorted(busy['states'])} with reason "
            f"{sorted(r for r in busy['reasons'] if r)}, and the containers running were "
            f"{awake_names}. Released the lease: `ev2` answered 200 "
            f"{busy['after_release'] * 1000:,.0f} ms later ({busy['waited']:.1f} s after "
            f"its first request), `ev1` having been evicted for it. Afterwards: "
            f"{', '.join(f'{n} {s}' for n, s in sorted(busy['still'].items()))}; the "
            f"upload finished with 200: {busy['upload_ok']}.\n\n"
            f"Evictions while they were busy: "
            f"{', '.join(f'{a} for {b}' for a, b in busy['evicted']) or 'none'}; busy "
            f"agents evicted: {len(wrongly)}. All evictions of the run (`agent.evicted`, "
            f"agent for agent): {', '.join(f'{a} for {b}' for a, b in evicted)}."
        )
        summary = (
            f"eviction: wake {statistics.median(free) * 1000:,.0f} ms into free room, "
            f"{statistics.median(evicting) * 1000:,.0f} ms with an eviction first (medians); "
            f"at most {most // MiB} of {BUDGET // MiB} MiB reserved in "
            f"{len(sampler.samples):,} samples; busy agents evicted: {len(wrongly)}",
        )
        failed = bool(over) or bool(wrongly) or "capacity" not in busy["reasons"]
        return Section(self.title, body, summary, failed=failed)


def _phases(log: list[dict]) -> dict[str, float]:
    """
    Median milliseconds of the wakes that evicted: their phases (from C{agent.ready}),
    and the evicted agents' drains (C{agent.evicted} to that agent's C{agent.sleep}).
    """
    evicting = [event["phases"] for event in log if event["event"] == "agent.ready"
                and "evicting" in (event.get("phases") or {})]
    drains, evicted_at = [], {}
    for event in log:
        if event["event"] == "agent.evicted":
            evicted_at[event["agent"]] = event["time"]
        elif event["event"] == "agent.sleep" and event["agent"] in evicted_at:
            drains.append(event["time"] - evicted_at.pop(event["agent"]))

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000 if values else float("nan")

    return {"evicting": ms([p["evicting"] for p in evicting]), "drain": ms(drains),
            "scheduling": ms([p.get("scheduling", 0) for p in evicting]),
            "probing": ms([p.get("probing", 0) for p in evicting])}


def _read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
