"""
One relayed socket (orchestrator.relay.socket) as its agent sees it: data frames are
activity, pings are not; drained with 1001 when the agent sleeps or the proxy stops.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import (
    IdleConfig,
    ProxyConfig,
    ProxyWebSocketConfig,
)
from orchestrator.states import AgentState
from tests.relay.harness import (
    BINARY,
    PING,
    PONG,
    TEXT,
    RelayHarness,
    close_frame,
    frame,
    http_head,
    upgrade_request,
)


class RecordingMeter:
    def __init__(self):
        self.frames = []

    def request_finished(self, agent, method, code, seconds):
        pass

    def frame_relayed(self, agent, direction):
        self.frames.append((agent, direction))


class MeteringTests(SynchronousTestCase):
    def test_each_data_frame_is_metered_with_its_direction(self):
        meter = RecordingMeter()
        harness = RelayHarness(meter=meter)
        client, backend = harness.open()
        client.send(frame(TEXT, b"question"))
        backend.send(frame(TEXT, b"answer", fin=False, mask=None))
        backend.send(frame(0, b" continued", mask=None))
        client.send(frame(PING, b"?"))
        self.assertEqual(meter.frames, [("alpha", "to_agent"), ("alpha", "to_client"),
                                        ("alpha", "to_client")])


# Activity and drain. ------------------------------------------------------------------


class ActivityTests(SynchronousTestCase):
    def setUp(self):
        self.harness = RelayHarness(idle=IdleConfig(timeout=60, drain_timeout=10))
        self.agent, self.clock = self.harness.agent, self.harness.clock
        self.client, self.backend = self.harness.open()

    def test_every_data_frame_either_way_is_activity(self):
        self.clock.advance(40)
        self.client.send(frame(TEXT, b"typing"))
        self.assertEqual(self.agent.last_activity, self.clock.seconds())
        self.clock.advance(40)
        self.backend.send(frame(BINARY, b"thinking", fin=False, mask=None))
        self.assertEqual(self.agent.last_activity, self.clock.seconds())

    def test_the_socket_knows_its_last_frame(self):
        self.assertIsNone(self.harness.relayed.last_frame)
        self.clock.advance(7)
        self.backend.send(frame(TEXT, b"hello", mask=None))
        self.assertEqual(self.harness.relayed.last_frame, self.clock.seconds())

    def test_pings_and_pongs_are_not_activity(self):
        before = self.agent.last_activity
        self.clock.advance(30)
        self.client.send(frame(PING, b"?"))
        self.backend.send(frame(PONG, b"?", mask=None))
        self.assertEqual(self.agent.last_activity, before)

    def test_socket_with_traffic_keeps_the_agent_awake(self):
        for _ in range(5):
            self.clock.advance(30)
            self.client.send(frame(TEXT, b"still here"))
        self.assertEqual(self.agent.state, AgentState.READY)

    def test_silent_socket_lets_the_agent_sleep_and_is_closed_1001(self):
        self.clock.advance(61)
        self.assertEqual(self.client.frames()[0].close, (1001, b"going away"))
        self.assertEqual(self.backend.frames()[0].close, (1001, b"going away"))
        self.client.send(close_frame(1001))
        self.client.vanish()
        self.backend.send(close_frame(1001, mask=None))
        self.backend.vanish()
        self.assertEqual(self.agent.state, AgentState.SLEEPING)

    def test_socket_from_an_ignored_path_is_not_activity(self):
        harness = RelayHarness(idle=IdleConfig(timeout=60, drain_timeout=10,
                                               ignore_paths=("/monitor",)))
        before = harness.agent.last_activity
        client, _ = harness.open(upgrade_request(path=b"/monitor"))
        harness.clock.advance(5)
        client.send(frame(TEXT, b"status?"))
        self.assertEqual(harness.agent.last_activity, before)


class DrainTests(SynchronousTestCase):
    def test_go_away_closes_both_peers_with_1001(self):
        harness = RelayHarness()
        client, backend = harness.open()
        harness.relayed.go_away()
        self.assertEqual(client.frames()[0].close[0], 1001)
        self.assertEqual(backend.frames()[0].close[0], 1001)

    def test_frames_after_the_close_are_not_activity(self):
        harness = RelayHarness()
        client, backend = harness.open()
        harness.relayed.go_away()
        before = harness.agent.last_activity
        harness.clock.advance(1)
        client.send(frame(TEXT, b"late"))
        self.assertEqual(harness.agent.last_activity, before)
        self.assertEqual(backend.frames()[1:], [])

    def test_drain_aborts_sockets_still_open_after_its_timeout(self):
        harness = RelayHarness(config=ProxyConfig(websocket=ProxyWebSocketConfig(
            ping_interval=0, ping_timeout=60)))
        client, backend = harness.open()
        drained = harness.agent.connections.drain(30, harness.clock)
        harness.clock.advance(29)
        self.assertNoResult(drained)
        self.assertFalse(client.transport.disconnecting)
        harness.clock.advance(1)
        self.assertEqual(self.successResultOf(drained), 1)
        self.assertTrue(client.transport.disconnecting)
        self.assertTrue(backend.transport.disconnecting)

    def test_drain_ends_as_soon_as_the_peers_have_closed(self):
        harness = RelayHarness()
        client, backend = harness.open()
        drained = harness.agent.connections.drain(30, harness.clock)
        client.send(close_frame(1001))
        client.vanish()
        backend.vanish()
        self.assertEqual(self.successResultOf(drained), 0)

    def test_go_away_during_the_handshake_is_503(self):
        harness = RelayHarness()
        client = harness.upgrade()
        backend = harness.accept_backend()
        harness.relayed.go_away()
        status, headers, _ = http_head(client.received())
        self.assertEqual((status, headers[b"retry-after"]), (503, b"3"))
        self.assertTrue(backend.closed)
