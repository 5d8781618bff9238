"""
A tiny demo agent to put behind the orchestrator: an HTML page, a health check and a
WebSocket echo, all on one port.

    GET /         "Hello from <hostname>", a page that opens a WebSocket to /ws and shows
                  what comes back
    GET /health   200 "ok"
    /ws           a WebSocket that echoes every text and binary message

Environment:

    PORT          the public port (default 8081), on every interface
    GATEWAY_PORT  if set, also answer on 127.0.0.1:GATEWAY_PORT only, a stand-in for
                  DutyBound's OpenClaw gateway, which binds to loopback inside its container

The reactor stops on SIGTERM (Twisted installs the handler, also as PID 1), so
`docker service scale <agent>=0` does not wait out the stop grace period.
"""

from __future__ import annotations

import html
import os
import socket
import sys

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import endpoints, reactor
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

log = Logger()

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Demo agent {hostname}</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 40em; }}
  #log {{ background: #f4f4f4; padding: 1em; min-height: 6em; white-space: pre-wrap; }}
</style>
</head>
<body>
<h1>Hello from {hostname}</h1>
<p>WebSocket: <span id="state">connecting</span></p>
<form id="send"><input id="text" value="hello" autocomplete="off"> <button>Send</button></form>
<div id="log"></div>
<script>
  const log = (line) => {{ document.getElementById("log").textContent += line + "\\n"; }};
  const state = (text) => {{ document.getElementById("state").textContent = text; }};
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(scheme + "//" + location.host + "/ws");
  socket.onopen = () => {{ state("open"); socket.send("hello from the browser"); }};
  socket.onmessage = (event) => log("echo: " + event.data);
  socket.onclose = (event) => state("closed (" + event.code + ")");
  document.getElementById("send").onsubmit = (event) => {{
    event.preventDefault();
    socket.send(document.getElementById("text").value);
  }};
</script>
</body>
</html>
"""


class EchoProtocol(WebSocketServerProtocol):
    """
    Send every message back as it came, text as text and binary as binary.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class Text(Resource):
    """
    A fixed answer to GET.
    """

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request):
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        return self.body


def make_site(hostname: str) -> Site:
    """
    The agent's one site: the page at /, the health check and the WebSocket echo.
    """
    factory = WebSocketServerFactory()
    factory.protocol = EchoProtocol
    root = Resource()
    page = PAGE.format(hostname=html.escape(hostname)).encode("utf-8")
    root.putChild(b"", Text(page, b"text/html; charset=utf-8"))
    root.putChild(b"health", Text(b"ok", b"text/plain"))
    root.putChild(b"ws", WebSocketResource(factory))
    return Site(root)


def make_gateway_site(hostname: str) -> Site:
    """
    The loopback-only stand-in for the OpenClaw gateway.
    """
    body = f"gateway on {hostname} (loopback only)\n".encode()
    return Site(Text(body, b"text/plain"))


def main() -> None:
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    hostname = socket.gethostname()
    port = int(os.environ.get("PORT", "8081"))
    endpoints.TCP4ServerEndpoint(reactor, port).listen(make_site(hostname))
    log.info("demo agent {hostname} listening on port {port}", hostname=hostname, port=port)
    gateway_port = os.environ.get("GATEWAY_PORT")
    if gateway_port:
        endpoints.TCP4ServerEndpoint(reactor, int(gateway_port), interface="127.0.0.1").listen(
            make_gateway_site(hostname)
        )
        log.info("gateway stand-in on 127.0.0.1:{port}", port=gateway_port)
    reactor.run()


if __name__ == "__main__":
    main()
