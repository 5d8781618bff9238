"""
Signals under load: SIGTERM with 1,000 open WebSockets (each must get close 1001 within
the drain timeout, and the process end), and SIGHUP under a steady request loop (no
request may fail).
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import time

import attrs
import yaml

from bench.harness import Bench
from bench.reliability.availability import (
    always_on,
    start_backend,
    start_orchestrator,
    wait_routable,
)
from bench.reliability.clients import GoodClient, percentile, source_address

WS_HOST = "ws.localhost"
HTTP_HOST = "rel.localhost"
_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


@attrs.frozen
class TermOutcome:
    sockets: int
    opened: int
    closes: dict[str, int]
    last_close_after: float | None
    exited_after: float | None
    drain_timeout: float


@attrs.frozen
class HupOutcome:
    reloads: int
    reloaded_events: int
    requests: int
    errors: dict[str, int]
    p99_ms: float | None


class _Socket(asyncio.Protocol):
    """
    One WebSocket that only waits: the handshake, then the close, answered.
    """

    def __init__(self, opened: asyncio.Future, closed: asyncio.Future) -> None:
        self.opened, self.closed = opened, closed
        self.buffer = b""
        self.open = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"GET /ws HTTP/1.1\r\nHost: " + WS_HOST.encode() + b"\r\nConnection: "
                        b"Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: " + _KEY + b"\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.open, self.buffer = True, rest
            if not self.opened.done():
                self.opened.set_result(head.startswith(b"HTTP/1.1 101"))
        while len(self.buffer) >= 2:
            length = self.buffer[1] & 0x7F
            if len(self.buffer) < 2 + length:
                return
            opcode, payload = self.buffer[0] & 0x0F, self.buffer[2:2 + length]
            self.buffer = self.buffer[2 + length:]
            if opcode == 8 and not self.closed.done():
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.closed.set_result((code, time.monotonic()))
                # The close answered (masked with key 0), as a browser does.
                self.transport.write(bytes((0x88, 0x82)) + b"\0\0\0\0" + payload[:2])
            elif opcode == 9:  # a keepalive ping: pong
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_result(False)
        if not self.closed.done():
            self.closed.set_result((None, time.monotonic()))


def sigterm_with_websockets(bench: Bench, *, tree, sockets: int = 1000,
                            drain_timeout: float = 10.0) -> TermOutcome:
    with bench.scope():
        _, http_port, ws_port = start_backend(bench, "backend-term", bench.tmp / "term.jsonl")
        ws_agent = always_on(ws_port, WS_HOST, websocket={"max_connections": sockets * 2})
        ws_agent["health"] = {"path": "/", "interval": "1s"}
        process, port, _, _ = start_orchestrator(
            bench, "orchestrator-term", tree=tree, agents={"ws": ws_agent},
            extra={"shutdown": {"drain_timeout": f"{drain_timeout:g}s"}})
        time.sleep(2)

        async def run() -> TermOutcome:
            loop = asyncio.get_running_loop()
            pairs = []
            for index in range(sockets):
                opened, closed = loop.create_future(), loop.create_future()
                await loop.create_connection(lambda o=opened, c=closed: _Socket(o, c),
                                             "127.0.0.1", port,
                                             local_addr=(source_address(index, 20), 0))
                pairs.append((opened, closed))
                if index % 100 == 99:
                    await asyncio.sleep(0.05)
            results = await asyncio.wait_for(asyncio.gather(*(o for o, _ in pairs)), 60)
            term_at = time.monotonic()
            os.kill(process.pid, signal.SIGTERM)
            closes = await asyncio.wait_for(asyncio.gather(*(c for _, c in pairs)),
                                            drain_timeout + 30)
            exited = None
            deadline = time.monotonic() + drain_timeout + 30
            while time.monotonic() < deadline:
                if not process.alive():
                    exited = time.monotonic() - term_at
                    break
                await asyncio.sleep(0.05)
            codes: dict[str, int] = {}
            for code, _ in closes:
                codes[str(code)] = codes.get(str(code), 0) + 1
            return TermOutcome(sockets=sockets, opened=sum(results), closes=codes,
                               last_close_after=max(at for _, at in closes) - term_at,
                               exited_after=exited, drain_timeout=drain_timeout)

        return asyncio.run(run())


def sighup_under_load(bench: Bench, *, tree, seconds: float = 20.0, every: float = 2.0) -> HupOutcome:
    with bench.scope():
        _, http_port, _ = start_backend(bench, "backend-hup", bench.tmp / "hup.jsonl")
        process, port, _, directory = start_orchestrator(
            bench, "orchestrator-hup", tree=tree, agents={"rel": always_on(http_port)})
        wait_routable(port, HTTP_HOST)
        path = directory / "orchestrator.yaml"
        config = yaml.safe_load(path.read_text())
        good = GoodClient(port, HTTP_HOST, interval=0.02)

        async def run() -> int:
            looping = asyncio.create_task(good.run(seconds))
            reloads = 0
            while not looping.done():
                await asyncio.sleep(every)
                if looping.done():
                    break
                # A real change each time, so every reload applies something.
                config.setdefault("proxy", {})["retry_after"] = 3 + reloads % 2
                path.write_text(yaml.safe_dump(config, sort_keys=False))
                os.kill(process.pid, signal.SIGHUP)
                reloads += 1
            await looping
            return reloads

        reloads = asyncio.run(run())
        time.sleep(0.5)
        log = (directory / "twistd.log").read_text(errors="replace")
        return HupOutcome(reloads=reloads, reloaded_events=log.count("config.reloaded") or
                          log.count("configuration reloaded"), requests=good.count,
                          errors=good.errors,
                          p99_ms=(percentile(good.latencies, 0.99) or 0) * 1000)
