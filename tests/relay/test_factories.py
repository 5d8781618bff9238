"""
What all relayed sockets share (orchestrator.relay.factories): the legs' logs, throttled
for what any peer can repeat.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import (
    HttpPathLog,
)
from tests.relay.harness import (
    TEXT,
    RelayHarness,
    frame,
    upgrade_request,
)


class LogTests(SynchronousTestCase):
    """
    What one client can repeat at will (through Autobahn or the relay) is logged at
    most once a minute per kind.
    """

    def setUp(self):
        self.logged = HttpPathLog(self)

    def assertEachKindOnce(self):
        kinds = [event.get("log_format") for event in self.logged]
        self.assertEqual(len(kinds), len(set(kinds)), kinds)

    def test_malformed_handshakes(self):
        harness = RelayHarness()
        for _ in range(50):
            harness.upgrade(upgrade_request(extra=b"Sec-WebSocket-Version: 7\r\n"))
        self.assertEachKindOnce()

    def test_handshakes_the_agent_refuses(self):
        harness = RelayHarness()
        for _ in range(50):
            harness.upgrade()
            backend = harness.accept_backend()
            backend.received()
            backend.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            backend.vanish()
        self.assertEachKindOnce()

    def test_invalid_frames(self):
        harness = RelayHarness()
        for _ in range(50):
            client, backend = harness.open()
            client.send(frame(TEXT, b"caf\xe9!"))
            client.vanish()
            backend.vanish()
        self.assertEachKindOnce()
