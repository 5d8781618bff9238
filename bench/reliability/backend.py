"""
The agent behind the orchestrator in the reliability runs: an HTTP/1.1 server that
records every request head it gets (for the corpus's checks), streams large answers,
reads uploads, answers a corpus case's raw bytes, and counts its open connections; and a
WebSocket echo (the websockets library, an implementation independent of Autobahn) that
records the close codes it receives.

    python -m bench.reliability.backend HTTP_PORT WS_PORT RECORD.jsonl [CORPUS.yaml]

C{GET /_stats} (asked directly, not through the proxy) answers the counts as JSON.
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import sys

CHUNK = 64 * 1024
_stats = {"open": 0, "most_open": 0, "requests": 0, "ws_closes": []}


class Recorder:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - kept for the process

    def write(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        self._file.write(json.dumps({"method": method, "target": target,
                                     "headers": headers}) + "\n")


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                return total
            await reader.readexactly(size + 2)
            total += size
    remaining = int(headers.get("content-length", "0") or 0)
    total = remaining
    while remaining:
        data = await reader.read(min(remaining, CHUNK))
        if not data:
            raise ConnectionError("upload cut")
        remaining -= len(data)
    return total


async def serve(reader, writer, recorder: Recorder, corpus: dict[str, bytes]) -> None:
    _stats["open"] += 1
    _stats["most_open"] = max(_stats["most_open"], _stats["open"])
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
            fields = [tuple(part.strip() for part in line.split(":", 1))
                      for line in lines[1:] if ":" in line]
            headers = {name.lower(): value for name, value in fields}
            _stats["requests"] += 1
            if target == "/_stats":
                body = json.dumps(_stats).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                continue
            recorder.write(method, target, fields)
            received = await read_body(reader, headers)
            path, _, query = target.partition("?")
            if path.startswith("/corpus/") and path[8:] in corpus:
                writer.write(corpus[path[8:]])
                await writer.drain()
                return  # a raw answer may frame nothing: the connection ends with it
            if path == "/big" and method == "GET":
                mib = int(dict(p.split("=") for p in query.split("&") if "=" in p).get("mib", 64))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % (mib * 1024 * 1024))
                block = b"x" * CHUNK
                for _ in range(mib * 16):
                    writer.write(block)
                    await writer.drain()
                continue
            body = json.dumps({"received": received}).encode() if method == "POST" else b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d"
                         b"\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        _stats["open"] -= 1
        writer.close()


async def echo(websocket) -> None:
    import websockets

    try:
        async for message in websocket:
            await websocket.send(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        # The close the relay sent this agent (its code), not the agent's own.
        protocol = getattr(websocket, "protocol", websocket)
        received = getattr(protocol, "close_rcvd", None)
        _stats["ws_closes"] = (_stats["ws_closes"] + [received.code if received else None])[-200:]


async def main(http_port: int, ws_port: int, record: str, corpus_path: str | None) -> None:
    import websockets

    corpus = {}
    if corpus_path:
        from tests.corpus import load_corpus

        corpus = {case.id: case.backend for case in load_corpus(corpus_path) if case.backend}
    recorder = Recorder(record)
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, recorder, corpus), "127.0.0.1", http_port, backlog=4096,
        limit=256 * 1024)
    async with server, websockets.serve(echo, "127.0.0.1", ws_port, max_size=None,
                                        ping_interval=None, compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                     sys.argv[4] if len(sys.argv) > 4 else None))
