"""
The clients of the reliability runs, on asyncio over raw sockets (bounded in count and
time, to 127.0.0.0/8 only): hostile ones that hold connections (idle, slow readers,
slow bodies, trickled headers) and a well-behaved one whose errors and latency are what
the run reports.

Hostile connections come from their own loopback addresses (127.0.1.x), so the one
well-behaved client (127.0.0.1) is another client, as it would be on the Internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import attrs

#: The kinds of hostile connections.
KINDS = ("idle", "slow_headers", "slow_reader", "slow_body", "stalled_body")


@attrs.define
class Held:
    """
    What happened to the hostile connections of one kind: how many were opened, refused
    at once, answered (and with which status), closed by the server, and when.
    """

    kind: str
    opened: int = 0
    failed_to_open: int = 0
    statuses: dict[int, int] = attrs.field(factory=dict)
    closed_after: list[float] = attrs.field(factory=list)

    @property
    def closed(self) -> int:
        return len(self.closed_after)


def source_address(index: int, addresses: int) -> str:
    """
    The loopback address the hostile connection C{index} comes from, over C{addresses}.
    """
    number = index % addresses
    return f"127.0.{1 + number // 250}.{1 + number % 250}"


async def _connect(port: int, source: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 5)
    except BaseException:
        sock.close()
        raise
    return sock


async def _status_or_close(sock: socket.socket, until: float) -> tuple[int | None, bool]:
    """
    Read (a little) until the server answers or closes, or C{until}: (status, closed).
    """
    loop = asyncio.get_running_loop()
    data = b""
    while time.monotonic() < until:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), until - time.monotonic())
        except TimeoutError:
            break
        except OSError:
            return _status(data), True
        if not chunk:
            return _status(data), True
        data += chunk
    return _status(data), False


def _status(data: bytes) -> int | None:
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def hold(kind: str, index: int, *, port: int, host: str, addresses: int,
               seconds: float, held: Held, started: float) -> None:
    """
    One hostile connection of C{kind}, held for at most C{seconds}.
    """
    loop = asyncio.get_running_loop()
    until = started + seconds
    try:
        sock = await _connect(port, source_address(index, addresses),
                              rcvbuf=4096 if kind == "slow_reader" else None)
    except (OSError, TimeoutError):
        held.failed_to_open += 1
        return
    held.opened += 1
    try:
        if kind == "idle":
            status, closed = await _status_or_close(sock, until)
        elif kind == "slow_headers":
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n")
            status, closed = None, False
            while time.monotonic() < until and not closed:
                status, closed = await _status_or_close(sock, min(until, time.monotonic() + 5))
                if not closed:
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(sock, b"X-Trickle: 1\r\n")
        elif kind in ("slow_body", "stalled_body"):
            # A byte every 5 s, or one byte and then nothing.
            await loop.sock_sendall(sock, b"POST /upload HTTP/1.1\r\nHost: " + host.encode()
                                    + b"\r\nContent-Length: 10485760\r\n\r\nx")
            status, closed = None, False
            while time.monotonic() < until and not closed:
                status, closed = await _status_or_close(sock, min(until, time.monotonic() + 5))
                if not closed and kind == "slow_body":
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(sock, b"x")
        else:  # slow_reader: ask for 64 MiB, read nothing until the end
            await loop.sock_sendall(sock, b"GET /big?mib=64 HTTP/1.1\r\nHost: "
                                    + host.encode() + b"\r\n\r\n")
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            status, closed = await _reset_or_alive(sock)
        if status is not None:
            held.statuses[status] = held.statuses.get(status, 0) + 1
        if closed:
            held.closed_after.append(time.monotonic() - started)
    finally:
        sock.close()


async def _reset_or_alive(sock: socket.socket) -> tuple[int | None, bool]:
    """
    Whether the server has cut a connection we never read from: its data is still in
    our buffer, so read it all (bounded) to find the end or the reset.
    """
    loop = asyncio.get_running_loop()
    status = None
    deadline = time.monotonic() + 2
    first = True
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 0.2)
        except TimeoutError:
            return status, False
        except OSError:
            return status, True
        if not chunk:
            return status, True
        if first:
            status, first = _status(chunk), False
    return status, False


@attrs.define
class GoodClient:
    """
    A well-behaved client: a small request on a new connection every C{interval}
    seconds, each allowed C{timeout} seconds; its latencies and errors.
    """

    port: int
    host: str
    interval: float = 0.05
    timeout: float = 5.0
    latencies: list[float] = attrs.field(factory=list)
    errors: dict[str, int] = attrs.field(factory=dict)

    async def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            began = time.monotonic()
            error = await self._one()
            if error is None:
                self.latencies.append(time.monotonic() - began)
            else:
                self.errors[error] = self.errors.get(error, 0) + 1
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    async def _one(self) -> str | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=("127.0.0.1", 0)), self.timeout)
        except (OSError, TimeoutError) as error:
            return f"connect: {type(error).__name__}"
        try:
            writer.write(b"GET /small HTTP/1.1\r\nHost: " + self.host.encode()
                         + b"\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), self.timeout)
        except (OSError, TimeoutError) as error:
            return f"request: {type(error).__name__}"
        finally:
            writer.close()
        status = _status(answer)
        return None if status == 200 else f"status {status}"

    @property
    def count(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def attack(kind: str, *, count: int, port: int, host: str, addresses: int,
                 seconds: float, ramp: float) -> Held:
    """
    C{count} hostile connections of C{kind}, opened over C{ramp} seconds from
    C{addresses} loopback addresses, each held for C{seconds} from the start.
    """
    held = Held(kind)
    started = time.monotonic()
    tasks = []
    for index in range(count):
        tasks.append(asyncio.create_task(hold(kind, index, port=port, host=host,
                                              addresses=addresses, seconds=seconds,
                                              held=held, started=started)))
        if ramp:
            await asyncio.sleep(ramp / count)
    await asyncio.gather(*tasks, return_exceptions=True)
    return held
