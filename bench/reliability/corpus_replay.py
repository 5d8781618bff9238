"""
The hostile corpus (tests/corpus/hostile.yaml) over real sockets, against twistd: each
case on a fresh connection; what the client got, what the agent saw (its record of
request heads, its WebSocket close codes) checked against the case's expectations.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import attrs

from bench.reliability.availability import backend_stats
from tests.corpus import Case, load_corpus

HTTP_HOST = "corpus.localhost"
WS_HOST = "ws.localhost"
_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


@attrs.frozen
class Result:
    case: Case
    passed: bool
    detail: str
    skipped: bool = False


def _recv_all(sock: socket.socket, seconds: float) -> tuple[bytes, bool, bool]:
    """
    What arrives within C{seconds}: (bytes, closed by the server, reset).
    """
    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if data and b"\r\n\r\n" in data and _complete(data):
                return data, False, False
            continue
        except ConnectionResetError:
            return data, True, True
        if not chunk:
            return data, True, False
        data += chunk
    return data, False, False


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return True


def _status(data: bytes) -> int | None:
    # An HTTP/1.1 status line, whatever the request's version (RFC 9110 section 6.2).
    parts = data.split(b" ", 2)
    return int(parts[1]) if parts[0] == b"HTTP/1.1" and len(parts) > 1 and parts[1].isdigit() else None


def _seen_since(record: Path, before: int) -> list[dict]:
    lines = record.read_text().splitlines()
    return [json.loads(line) for line in lines[before:]]


def replay_request(case: Case, port: int, record: Path) -> Result:
    before = len(record.read_text().splitlines())
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(case.request_for(HTTP_HOST))
        answer, closed, _ = _recv_all(sock, 3)
    time.sleep(0.05)
    seen = [s for s in _seen_since(record, before) if s["target"] != "/small"]
    expect, problems = case.expect, []
    status = _status(answer)
    if status != expect.status:
        problems.append(f"status {status}, expected {expect.status}")
    problems += [f"the answer holds {text!r}" for text in expect.lacks if text in answer]
    if expect.closes and not closed:
        problems.append("the connection stayed open")
    if expect.backend == "none" and seen:
        problems.append(f"the agent got {seen[0]['method']} {seen[0]['target']}")
    if expect.backend == "reached" or expect.backend_headers or expect.backend_lacks:
        if not seen:
            problems.append("the agent got nothing")
        else:
            headers = {}
            for name, value in seen[0]["headers"]:
                headers.setdefault(name.lower(), value)
            for name, value in case.backend_headers(HTTP_HOST).items():
                if headers.get(name.lower()) != value:
                    problems.append(f"the agent saw {name}: {headers.get(name.lower())!r}")
            problems += [f"the agent saw {name}" for name in expect.backend_lacks
                         if name.lower() in headers]
            if expect.backend_target is not None and seen[0]["target"] != expect.backend_target:
                problems.append(f"the agent's target was {seen[0]['target']!r}")
    return Result(case, not problems, "; ".join(problems) or f"{status}")


def _read_frame(sock: socket.socket, seconds: float) -> tuple[int, bytes] | None:
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            if len(data) >= 2:
                length, at = data[1] & 0x7F, 2
                if length == 126 and len(data) >= 4:
                    (length,), at = struct.unpack("!H", data[2:4]), 4
                if len(data) >= at + length:
                    return data[0] & 0x0F, data[at:at + length]
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except (TimeoutError, ConnectionResetError):
        return None


def replay_frames(case: Case, port: int, backend_port: int) -> Result:
    if case.sender != "client":
        return Result(case, True, "agent-sent frames: memory replay only", skipped=True)
    closes_before = len(backend_stats(backend_port)["ws_closes"])
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: " + WS_HOST.encode() + b"\r\nConnection: "
                     b"Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: " + _KEY + b"\r\n\r\n")
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        if _status(head) != 101:
            return Result(case, False, f"handshake: {head[:60]!r}")
        sock.sendall(case.frames)
        frame = _read_frame(sock, 3)
    problems = []
    code = struct.unpack("!H", frame[1][:2])[0] if frame and frame[0] == 8 and len(frame[1]) >= 2 else None
    if code != case.expect.close:
        problems.append(f"the client got {'close ' + str(code) if frame else 'no close (reset or nothing)'}, "
                        f"expected {case.expect.close}")
    deadline, agent_code = time.monotonic() + 3, "none"
    while time.monotonic() < deadline:
        closes = backend_stats(backend_port)["ws_closes"]
        if len(closes) > closes_before:
            agent_code = closes[-1]
            break
        time.sleep(0.05)
    if agent_code != case.expect.agent_close:
        problems.append(f"the agent got close {agent_code}, expected {case.expect.agent_close}")
    return Result(case, not problems, "; ".join(problems) or f"close {code}")


def replay_all(port: int, backend_port: int, record: Path) -> list[Result]:
    results = []
    for case in load_corpus():
        try:
            if case.frames is not None:
                results.append(replay_frames(case, port, backend_port))
            else:
                results.append(replay_request(case, port, record))
        except OSError as error:
            results.append(Result(case, False, f"{type(error).__name__}: {error}"))
    return results
