"""
A Unix socket in front of the Docker engine's that counts the API requests made through
it: the orchestrator is pointed at it (C{docker.url}), so the bench counts its Swarm
calls from outside, whatever the code believes it does.

Each connection is copied both ways by two threads; the requests are read off the
client's side as they pass (request line, headers, C{Content-Length} body), never
changed. C{GET /events} counts once however long it streams. Bounded: it stops with the
bench (L{DockerCallCounter.stop}), and every socket has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time

import attrs

ENGINE = "/var/run/docker.sock"
_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]$")


@attrs.frozen
class Call:
    """
    One request: when (monotonic seconds), its method and path (without the API version
    and the query).
    """

    time: float
    method: str
    path: str


class DockerCallCounter:
    """
    Listens on C{path}; every connection is relayed to the engine at C{upstream}.
    """

    def __init__(self, path: str, upstream: str = ENGINE) -> None:
        self.path = path
        self.upstream = upstream
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> DockerCallCounter:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        server = self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(64)
        server.settimeout(0.5)
        threading.Thread(target=self._accept, name="docker-calls", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for sock in [self._server, *list(self._sockets)]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def between(self, start: float, end: float) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if start <= call.time < end]

    # Threads ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(self.upstream)
            except OSError:
                client.close()
                continue
            self._sockets.update((client, engine))
            threading.Thread(target=self._requests, args=(client, engine), daemon=True).start()
            threading.Thread(target=self._copy, args=(engine, client), daemon=True).start()

    def _copy(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _requests(self, client: socket.socket, engine: socket.socket) -> None:
        pending = b""
        body_left = 0
        try:
            while data := client.recv(65536):
                engine.sendall(data)
                pending += data
                while True:
                    if body_left:
                        taken = min(body_left, len(pending))
                        pending, body_left = pending[taken:], body_left - taken
                        if body_left:
                            break
                    head, found, rest = pending.partition(b"\r\n\r\n")
                    if not found:
                        break
                    pending = rest
                    body_left = self._record(head)
        except OSError:
            pass
        finally:
            self._close(client, engine)

    def _record(self, head: bytes) -> int:
        lines = head.split(b"\r\n")
        match = _REQUEST_LINE.match(lines[0])
        if match is None:
            return 0
        path = re.sub(rb"^/v[0-9.]+", b"", match.group(2).split(b"?", 1)[0])
        with self._lock:
            self.calls.append(Call(time.monotonic(), match.group(1).decode(),
                                   path.decode("latin-1")))
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return int(value.strip() or 0)
        return 0

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()


def per_kind(calls: list[Call]) -> dict[str, int]:
    """
    C{"GET /services/{id}": 3, ...}: the calls by method and path, ids elided.
    """
    counts: dict[str, int] = {}
    for call in calls:
        path = re.sub(r"/(services|tasks|nodes|containers)/[^/]+", r"/\1/{id}", call.path)
        key = f"{call.method} {path}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
