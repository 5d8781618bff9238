"""
A tiny demo agent to put behind the orchestrator: an HTML page, a health check and a
WebSocket echo, all on one port; and, to show the agents' API (docs/agent-api.md), a
"preview" of an app it builds on a second port, which it can register as a hostname of
its own, and a busy lease it can take.

    GET /              "Hello from <hostname>", a page that opens a WebSocket to /ws and
                       shows what comes back, with the buttons below
    GET /health        200 "ok"
    /ws                a WebSocket that echoes every text and binary message
    POST /demo/preview register preview-<hostname>.<PREVIEW_DOMAIN> -> the preview port
    POST /demo/lease   take a busy lease (?seconds=N, 600 by default)

Environment:

    PORT            the public port (default 8081), on every interface
    GATEWAY_PORT    if set, also answer on 127.0.0.1:GATEWAY_PORT only, a stand-in for
                    DutyBound's OpenClaw gateway, which binds to loopback inside its container
    PREVIEW_PORT    the preview's port (default 3000)
    PREVIEW_DOMAIN  the domain under the agent's wildcard host (default demo.localhost)
    ORCHESTRATOR_API  the agents' API (default http://tasks.orchestrator:8090): called
                    from this container, which is its identity (no token needed)

The reactor stops on SIGTERM (Twisted installs the handler, also as PID 1), so
`docker service scale <agent>=0` does not wait out the stop grace period.
"""

from __future__ import annotations

import html
import json
import os
import socket
import sys
from urllib.parse import parse_qs

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

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
<p>
  <button id="preview">Register a preview host</button>
  <button id="lease">Keep me awake for 10 minutes</button>
</p>
<div id="log"></div>
<script>
  const log = (line) => {{ document.getElementById("log").textContent += line + "\\n"; }};
  const state = (text) => {{ document.getElementById("state").textContent = text; }};
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(scheme + "//" + location.host + "/ws");
  socket.onopen = () => {{ state("open"); socket.send("hello from the browser"); }};
  socket.onmessage = (event) => log("echo: " + event.data);
  socket.onclose = (event) => state("closed (" + event.code + ")");
  const post = async (path) => {{
    const response = await fetch(path, {{method: "POST"}});
    return [response.status, await response.json()];
  }};
  document.getElementById("preview").onclick = async () => {{
    const [status, body] = await post("/demo/preview");
    if (status < 300) {{
      const url = location.protocol + "//" + body.host + (location.port ? ":" + location.port : "") + "/";
      log("preview registered (" + status + "): " + url);
    }} else {{
      log("preview refused (" + status + "): " + body.error);
    }}
  }};
  document.getElementById("lease").onclick = async () => {{
    const [status, body] = await post("/demo/lease?seconds=600");
    log(status < 300 ? "kept awake until " + new Date(body.expires * 1000).toLocaleTimeString()
                     : "lease refused (" + status + "): " + body.error);
  }};
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


@implementer(IBodyProducer)
class JsonBody:
    """
    A small JSON request body for the agents' API.
    """

    def __init__(self, document: dict) -> None:
        self._data = json.dumps(document).encode()
        self.length = len(self._data)

    def startProducing(self, consumer):
        consumer.write(self._data)
        return Deferred.fromCoroutine(_nothing())

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


async def _nothing() -> None:
    return None


class AgentsApi:
    """
    The orchestrator's agents' API, called from this container (its address is its
    identity: no token needed).
    """

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")
        self._agent = Agent(reactor)

    async def post(self, path: str, document: dict) -> tuple[int, dict]:
        response = await self._agent.request(
            b"POST", (self._url + path).encode(),
            Headers({b"Content-Type": [b"application/json"]}), JsonBody(document))
        return response.code, json.loads(await readBody(response) or b"{}")


class DemoAction(Resource):
    """
    A button of the page: one call to the agents' API, its answer passed back as it is.
    """

    isLeaf = True

    def __init__(self, call) -> None:
        super().__init__()
        self._call = call

    def render_POST(self, request):
        query = parse_qs(request.uri.partition(b"?")[2].decode("ascii", "replace"))
        answering = Deferred.fromCoroutine(self._call(query))

        def answer(result):
            status, body = result
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", b"application/json")
            request.write(json.dumps(body).encode())
            request.finish()

        def failed(failure):
            log.failure("calling the agents' API failed", failure)
            answer((502, {"error": f"the agents' API did not answer: {failure.value}"}))

        answering.addCallbacks(answer, failed)
        return NOT_DONE_YET


def make_site(hostname: str, api: AgentsApi, preview_host: str, preview_port: int) -> Site:
    """
    The agent's one site: the page at /, the health check, the WebSocket echo and the
    page's buttons.
    """
    factory = WebSocketServerFactory()
    factory.protocol = EchoProtocol
    root = Resource()
    page = PAGE.format(hostname=html.escape(hostname)).encode("utf-8")
    root.putChild(b"", Text(page, b"text/html; charset=utf-8"))
    root.putChild(b"health", Text(b"ok", b"text/plain"))
    root.putChild(b"ws", WebSocketResource(factory))
    demo = Resource()
    demo.putChild(b"preview", DemoAction(lambda query: api.post(
        "/api/services", {"host": preview_host, "port": preview_port})))
    demo.putChild(b"lease", DemoAction(lambda query: api.post(
        "/api/lease", {"seconds": float(query.get("seconds", ["600"])[0]),
                       "reason": "the demo page's button"})))
    root.putChild(b"demo", demo)
    return Site(root)


def make_preview_site(hostname: str) -> Site:
    """
    The "preview of an app the agent builds": what its registered host shows.
    """
    body = f"<!doctype html><title>Preview</title><h1>Preview of {html.escape(hostname)}</h1>"
    return Site(Text(body.encode(), b"text/html; charset=utf-8"))


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
    preview_port = int(os.environ.get("PREVIEW_PORT", "3000"))
    preview_host = f"preview-{hostname}.{os.environ.get('PREVIEW_DOMAIN', 'demo.localhost')}"
    api = AgentsApi(os.environ.get("ORCHESTRATOR_API", "http://tasks.orchestrator:8090"))
    endpoints.TCP4ServerEndpoint(reactor, port).listen(
        make_site(hostname, api, preview_host.lower(), preview_port))
    endpoints.TCP4ServerEndpoint(reactor, preview_port).listen(make_preview_site(hostname))
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
