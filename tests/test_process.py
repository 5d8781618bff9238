"""
The orchestrator as its users run it: C{twistd -n orchestrator --config FILE} in its own
process, on loopback, sent a real SIGTERM while a request is in flight and a WebSocket
is open.

No Docker engine is needed: the agent is always-on (the proxy routes to it whatever
Swarm says) and its engine URL points nowhere, so it is only reported degraded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import treq
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import Data

from .helpers import inline

REPO = Path(__file__).resolve().parents[1]
#: How long the backend takes to answer the slow request: the SIGTERM comes meanwhile.
SLOW = 1.0


class Slow(Resource):
    """
    Answers after L{SLOW} seconds, firing C{arrived} when the request is in.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.arrived: Deferred = Deferred()

    def render_GET(self, request):
        self.arrived.callback(None)

        def answer():
            request.write(b"slow done")
            request.finish()

        reactor.callLater(SLOW, answer)
        return NOT_DONE_YET


class Echo(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


def backend_site(slow: Slow) -> Site:
    """
    The agent: C{/health}, C{/slow} and a WebSocket echo at C{/ws}.
    """
    echo = WebSocketServerFactory()
    echo.protocol = Echo
    root = Resource()
    root.putChild(b"health", Data(b"ok", "text/plain"))
    root.putChild(b"slow", slow)
    root.putChild(b"ws", WebSocketResource(echo))
    return Site(root)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def open_websocket(port: int):
    """
    A WebSocket through the proxy to the agent's echo, checked to echo (blocking: run it
    in a thread).
    """
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    websocket = connect("ws://slow.localhost/ws", sock=sock, open_timeout=10)
    websocket.send("ping")
    assert websocket.recv(timeout=10) == "ping"
    return websocket


def close_code(websocket) -> int | None:
    """
    Wait (blocking) until the server closes C{websocket}; its close code.
    """
    from websockets.exceptions import ConnectionClosed

    try:
        websocket.recv(timeout=20)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    finally:
        websocket.close()
    return None


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


class TwistdProcessTests(TestCase):
    timeout = 60

    async def start(self, backend_port: int) -> tuple[subprocess.Popen, int, Path]:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        proxy, admin = free_port(), free_port()
        config = directory / "orchestrator.yaml"
        config.write_text(f"""
listen:
  proxy: "tcp:{proxy}:interface=127.0.0.1"
  admin: "tcp:{admin}:interface=127.0.0.1"
docker:
  url: "unix://{directory}/no-engine.sock"
shutdown:
  drain_timeout: 20s
agents:
  slow:
    service: slow
    backend: "http://127.0.0.1:{backend_port}"
    hosts: ["slow.localhost"]
    policy: always_on
""")
        log = directory / "twistd.log"
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=",
             f"--logfile={log}", "orchestrator", "--config", str(config)],
            cwd=directory, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 20
        while refuses(proxy):
            self.assertIsNone(process.poll(), log.read_text() if log.exists() else "")
            self.assertLess(time.monotonic(), deadline, "the proxy never listened")
            await deferLater(reactor, 0.1)
        return process, proxy, log

    @inline
    async def test_sigterm_closes_sockets_lets_requests_finish_then_exits(self):
        slow = Slow()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            backend_site(slow))
        self.addCleanup(port.stopListening)
        process, proxy, log = await self.start(port.getHost().port)

        websocket = await deferToThread(open_websocket, proxy)
        socket_closed = deferToThread(close_code, websocket)
        response = treq.get(f"http://127.0.0.1:{proxy}/slow", headers={"Host": "slow.localhost"},
                            persistent=False)
        await slow.arrived
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # It stops accepting at once...
        while not refuses(proxy):
            self.assertLess(time.monotonic() - signalled, SLOW, "still accepting")
            await deferLater(reactor, 0.05)
        # ...the open WebSocket is told the server is going away...
        self.assertEqual(await socket_closed, 1001)
        # ...while the request in flight gets its whole answer...
        answered = await response
        self.assertEqual(answered.code, 200)
        self.assertEqual(await answered.content(), b"slow done")
        # ...and only then does the process end, cleanly.
        status = await deferToThread(process.wait, 20)
        self.assertGreaterEqual(time.monotonic() - signalled, SLOW * 0.9)
        self.assertIn(status, (0, -signal.SIGTERM))
        text = log.read_text()
        self.assertIn("Server Shut Down.", text)
        self.assertNotIn("Traceback", text)
