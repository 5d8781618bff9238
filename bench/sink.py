"""
An upload sink for the streaming benchmark: an HTTP/1.1 server that reads each request
body to the end, keeps none of it, and only then answers C{{"received": N}}, so an upload
is complete when curl sees the answer and N proves every byte arrived. C{GET} answers
C{ok} (the orchestrator's health probe).

Written by hand because it must be trivially fast and honest about byte counts: nginx's
C{return} answers before reading the body. Run: C{python3 -m bench.sink PORT}.
"""

from __future__ import annotations

import json
import socketserver
import sys

_CHUNK = 1024 * 1024


class SinkHandler(socketserver.StreamRequestHandler):
    """
    Serves keep-alive requests on one connection until the client closes it.
    """

    rbufsize = _CHUNK

    def handle(self) -> None:
        buffer = bytearray(_CHUNK)
        while self._serve_one(buffer):
            pass

    def _serve_one(self, buffer: bytearray) -> bool:
        request_line = self.rfile.readline(65536)
        if not request_line:
            return False
        headers = {}
        while True:
            line = self.rfile.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            received = self._read_chunked(buffer)
        else:
            received = self._read(int(headers.get("content-length", "0")), buffer)
        if request_line.startswith((b"GET ", b"HEAD ")):
            body = b"ok"
        else:
            body = json.dumps({"received": received}).encode("ascii")
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.wfile.flush()
        return headers.get("connection", "").lower() != "close"

    def _read(self, length: int, buffer: bytearray) -> int:
        view = memoryview(buffer)
        remaining = length
        while remaining > 0:
            count = self.rfile.readinto(view[: min(remaining, len(view))])
            if not count:
                break
            remaining -= count
        return length - remaining

    def _read_chunked(self, buffer: bytearray) -> int:
        received = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass
                return received
            received += self._read(size, buffer)
            self.rfile.readline(1024)


class SinkServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str]) -> None:
    port = int(argv[1])
    with SinkServer(("127.0.0.1", port), SinkHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
