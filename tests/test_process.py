"""
The orchestrator as its users run it: C{twistd -n orchestrator --config FILE} in its own
process, on loopback, sent a real SIGTERM while a request is in flight.

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
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from .helpers import inline

REPO = Path(__file__).resolve().parents[1]
#: How long the backend takes to answer the slow request: the SIGTERM comes meanwhile.
SLOW = 1.0


class SlowBackend(Resource):
    """
    C{/health} answers at once; C{/slow} after L{SLOW} seconds, firing C{arrived} when
    the request is in.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.arrived: Deferred = Deferred()

    def render_GET(self, request):
        if request.path != b"/slow":
            return b"ok"
        self.arrived.callback(None)

        def answer():
            request.write(b"slow done")
            request.finish()

        reactor.callLater(SLOW, answer)
        return NOT_DONE_YET


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    async def test_sigterm_lets_the_request_in_flight_finish_then_exits(self):
        backend = SlowBackend()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(backend))
        self.addCleanup(port.stopListening)
        process, proxy, log = await self.start(port.getHost().port)

        response = treq.get(f"http://127.0.0.1:{proxy}/slow", headers={"Host": "slow.localhost"},
                            persistent=False)
        await backend.arrived
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # It stops accepting at once...
        while not refuses(proxy):
            self.assertLess(time.monotonic() - signalled, SLOW, "still accepting")
            await deferLater(reactor, 0.05)
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
