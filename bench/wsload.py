"""
A closed-loop WebSocket echo load generator: C{connections} sockets, each sending one
message and waiting for its echo before the next, for C{duration} seconds. Prints one
JSON line: messages echoed, seconds, round-trip p50/p99 in ms.

    python -m bench.wsload --port 8080 --host bench.localhost --connections 50 --duration 10

Written on asyncio with prebuilt frames rather than a WebSocket library, so that the load
side costs as little CPU as it can: it shares its CPU with the echo backend. Every echo is
checked (opcode, length, payload) so a broken relay cannot look fast. Traffic goes to
127.0.0.1 only, and the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time


def masked_text_frame(payload: bytes) -> bytes:
    """
    One masked (client) text frame.
    """
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x81, 0x80 | length))
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def echo_frame(payload: bytes) -> bytes:
    """
    The unmasked frame the echo comes back in.
    """
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class EchoClient(asyncio.Protocol):
    """
    One socket: the handshake, then send, wait for the echo, send again.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.buffer = b""
        self.open = asyncio.get_running_loop().create_future()
        self.sent_at = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16))
        transport.write(b"GET " + self.run.path + b" HTTP/1.1\r\nHost: " + self.run.host
                        + b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.open.done():
            head, found, rest = buffer.partition(b"\r\n\r\n")
            if not found:
                self.buffer = buffer
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(RuntimeError(head.split(b"\r\n")[0].decode()))
                return
            self.open.set_result(None)
            buffer = rest
        expected = self.run.echo
        while len(buffer) >= len(expected):
            if buffer[:len(expected)] != expected:
                raise RuntimeError(f"unexpected frame: {buffer[:32]!r}")
            buffer = buffer[len(expected):]
            self.run.echoed(time.perf_counter_ns() - self.sent_at)
            self.send()
        self.buffer = buffer

    def send(self) -> None:
        if self.run.running:
            self.sent_at = time.perf_counter_ns()
            self.transport.write(self.run.frame)

    def connection_lost(self, exc) -> None:
        if not self.open.done():
            self.open.set_exception(exc or ConnectionError("closed during the handshake"))
        elif self.run.running:
            self.run.lost += 1


class Run:
    """
    The shared state of a run: the frame sent, what comes back, and the counts.
    """

    def __init__(self, host: bytes, path: bytes, size: int) -> None:
        payload = (b"x" * size)
        self.host, self.path = host, path
        self.frame = masked_text_frame(payload)
        self.echo = echo_frame(payload)
        self.running = False
        self.measuring = False
        self.messages = 0
        self.lost = 0
        self.samples: list[int] = []

    def echoed(self, nanoseconds: int) -> None:
        if self.measuring:
            self.messages += 1
            if self.messages % 8 == 0:  # a sample of RTTs is enough, and cheaper
                self.samples.append(nanoseconds)


def percentile(samples: list[int], percent: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))] / 1e6


async def main(arguments) -> dict:
    loop = asyncio.get_running_loop()
    run = Run(arguments.host.encode(), arguments.path.encode(), arguments.size)
    clients = []
    for _ in range(arguments.connections):
        _, client = await loop.create_connection(lambda: EchoClient(run), "127.0.0.1",
                                                 arguments.port)
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(client.open for client in clients)), 30)
    run.running = True
    for client in clients:
        client.send()
    await asyncio.sleep(arguments.warmup)
    run.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(arguments.duration)
    run.measuring = False
    seconds = time.perf_counter() - started
    run.running = False
    for client in clients:
        client.transport.abort()
    return {
        "messages": run.messages,
        "seconds": round(seconds, 3),
        "messages_per_second": round(run.messages / seconds, 1),
        "p50_ms": round(percentile(run.samples, 50), 3),
        "p99_ms": round(percentile(run.samples, 99), 3),
        "lost_connections": run.lost,
    }


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.wsload",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="on 127.0.0.1")
    parser.add_argument("--host", default="bench.localhost", help="the Host header")
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="message bytes")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    arguments = parser.parse_args(argv)
    arguments.duration = min(arguments.duration, 300.0)  # bounded, whatever was asked
    return arguments


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_arguments()))), flush=True)
