"""
The two legs of a relayed socket (orchestrator.relay.legs): frames both ways byte for
byte, pings and closes passed on, limits and validation, keepalive, flow control.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import (
    ProxyConfig,
    ProxyWebSocketConfig,
)
from tests.relay.harness import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Frame,
    RelayHarness,
    agent_with,
    close_frame,
    frame,
    read_frames,
)

# Frames. ------------------------------------------------------------------------------


class InvalidCloseTests(SynchronousTestCase):
    """
    A close frame that breaks RFC 6455 (section 5.5.1, 7.4) gets close 1002, sent before
    the TCP connection is closed (Autobahn took it for the reply to its own close, and
    aborted the connection with the 1002 unsent); the other peer gets 1001 or 1014.
    """

    cases = {
        "code 999": close_frame(999),
        "code 1005 on the wire": close_frame(1005),
        "code 1015 on the wire": close_frame(1015),
        "a 1-byte payload": frame(CLOSE, b"\x03"),
        "a reason that is not UTF-8": close_frame(1000, b"\xff"),
    }

    def test_a_client_sending_one_gets_1002(self):
        for name, bad in self.cases.items():
            with self.subTest(name):
                client, backend = RelayHarness().open()
                client.send(bad)
                self.assertEqual([f.close[0] for f in client.frames()], [1002])
                self.assertTrue(client.transport.disconnecting)
                self.assertFalse(client.transport.disconnected, name)  # not aborted
                self.assertEqual([f.close[0] for f in backend.frames()], [1001])

    def test_an_agent_sending_one_gets_1002(self):
        for name, bad in self.cases.items():
            with self.subTest(name):
                client, backend = RelayHarness().open()
                backend.send(bytes(bad[:1]) + bytes([bad[1] & 0x7F]) + _unmask(bad))
                self.assertEqual([f.close[0] for f in backend.frames()], [1002])
                self.assertEqual([f.close[0] for f in client.frames()], [1014])

    def test_a_closing_peer_that_never_reads_is_cut_after_the_ping_timeout(self):
        harness = RelayHarness()
        client, _ = harness.open()
        client.send(close_frame(999))
        self.assertFalse(client.transport.disconnected)
        harness.clock.advance(5)
        self.assertTrue(client.transport.disconnected)  # aborted


def _unmask(masked_frame: bytes) -> bytes:
    (parsed,) = read_frames(masked_frame)
    return parsed.payload


class FrameRelayTests(SynchronousTestCase):
    def setUp(self):
        self.harness = RelayHarness()
        self.client, self.backend = self.harness.open()

    def test_text_reaches_the_agent_masked_and_unchanged(self):
        self.client.send(frame(TEXT, "grüß dich".encode()))
        (relayed,) = self.backend.frames()
        self.assertEqual(relayed, Frame(True, TEXT, "grüß dich".encode(), masked=True))

    def test_binary_reaches_the_client_unmasked_and_unchanged(self):
        self.backend.send(frame(BINARY, bytes(range(256)), mask=None))
        self.assertEqual(self.client.frames(), [Frame(True, BINARY, bytes(range(256)), False)])

    def test_fragmented_message_keeps_its_frames(self):
        self.client.send(frame(TEXT, b"one ", fin=False) + frame(CONTINUATION, b"", fin=False)
                         + frame(PING, b"p") + frame(CONTINUATION, b"three", fin=True))
        frames = self.backend.frames()
        self.assertEqual([(f.fin, f.opcode, f.payload) for f in frames], [
            (False, TEXT, b"one "), (False, CONTINUATION, b""), (True, PING, b"p"),
            (True, CONTINUATION, b"three")])

    def test_frame_arriving_in_pieces_is_written_as_it_arrives(self):
        whole = frame(BINARY, b"x" * 70000, mask=None)
        self.backend.send(whole[:30000])
        self.assertGreater(len(self.client.received()), 29000)
        self.backend.send(whole[30000:])
        self.assertEqual(len(self.client.received()), len(whole) - 30000)

    def test_client_ping_is_answered_by_the_agent(self):
        self.client.send(frame(PING, b"are you there"))
        self.assertEqual(self.backend.frames(), [Frame(True, PING, b"are you there", True)])
        self.assertEqual(self.client.frames(), [])
        self.backend.send(frame(PONG, b"are you there", mask=None))
        self.assertEqual(self.client.frames(), [Frame(True, PONG, b"are you there", False)])

    def test_client_close_code_and_reason_reach_the_agent(self):
        self.client.send(close_frame(4001, b"bye now"))
        (close,) = self.backend.frames()
        self.assertEqual(close.close, (4001, b"bye now"))
        (echo,) = self.client.frames()
        self.assertEqual(echo.close, (4001, b"bye now"))

    def test_agent_close_codes_are_not_rewritten(self):
        for code in (1001, 1011, 1012, 1013, 1014, 3000, 4999):
            harness = RelayHarness()
            client, backend = harness.open()
            backend.send(close_frame(code, b"reason", mask=None))
            (close,) = client.frames()
            self.assertEqual(close.close, (code, b"reason"))

    def test_close_without_a_code_passes_as_such(self):
        self.backend.send(frame(CLOSE, mask=None))
        self.assertEqual(self.client.frames(), [Frame(True, CLOSE, b"", False)])

    def test_message_over_the_limit_closes_1009(self):
        harness = RelayHarness(**agent_with(max_message_size=1000))
        client, backend = harness.open()
        client.send(frame(TEXT, b"a" * 600, fin=False))
        client.send(frame(CONTINUATION, b"a" * 600))
        (close,) = client.frames()
        self.assertEqual(close.close[0], 1009)
        self.assertEqual([(f.opcode, f.close[0] if f.opcode == CLOSE else None)
                          for f in backend.frames()], [(TEXT, None), (CLOSE, 1001)])

    def test_invalid_utf8_closes_1007(self):
        self.client.send(frame(TEXT, b"caf\xe9!"))
        self.assertEqual(self.client.frames()[0].close[0], 1007)
        self.assertEqual(self.backend.frames()[0].close[0], 1001)

    def test_text_ending_inside_a_code_point_is_not_passed_on(self):
        self.client.send(frame(TEXT, b"ok \xce"))
        self.assertEqual(self.client.frames()[0].close[0], 1007)
        self.assertEqual([f.opcode for f in self.backend.frames()], [CLOSE])

    def test_agent_text_ending_inside_a_code_point_is_not_passed_on(self):
        self.backend.send(frame(TEXT, b"\xf0\x9f\x98", mask=None))
        self.assertEqual([(f.opcode, f.close[0]) for f in self.client.frames()], [(CLOSE, 1014)])

    def test_a_fragmented_text_may_split_a_code_point_between_frames(self):
        self.client.send(frame(TEXT, b"\xce", fin=False) + frame(CONTINUATION, b"\xbb"))
        self.assertEqual([(f.opcode, f.payload) for f in self.backend.frames()],
                         [(TEXT, b"\xce"), (CONTINUATION, b"\xbb")])

    def test_a_final_text_frame_in_pieces_keeps_its_bytes_and_order(self):
        whole = frame(TEXT, "λ".encode() * 100)
        for at in range(0, len(whole), 7):
            self.client.send(whole[at:at + 7])
        self.assertEqual([f.payload for f in self.backend.frames()], ["λ".encode() * 100])

    def test_a_final_text_frame_in_pieces_ending_inside_a_code_point_is_cut(self):
        # Its first bytes were passed on as they came; its last, incomplete code point
        # never is: the agent's connection is cut rather than sent an invalid frame.
        whole = frame(TEXT, b"a" * 200 + b"\xe2\x82")
        self.client.send(whole[:100])
        self.client.send(whole[100:])
        self.assertEqual(self.client.frames()[0].close[0], 1007)
        self.assertEqual(self.backend.frames(), [])
        self.assertNotIn(b"\xe2", self.backend.transport.value()[-20:])
        self.assertTrue(self.backend.closed)

    def test_unmasked_client_frame_closes_1002(self):
        self.client.send(frame(TEXT, b"hi", mask=None))
        self.assertEqual(self.client.frames()[0].close[0], 1002)

    def test_agent_sending_invalid_utf8_is_a_bad_gateway_for_the_client(self):
        self.backend.send(frame(TEXT, b"\xff", mask=None))
        self.assertEqual(self.backend.frames()[0].close[0], 1007)
        self.assertEqual(self.client.frames()[0].close[0], 1014)

    def test_agent_vanishing_closes_the_client_with_1011(self):
        self.backend.vanish()
        self.assertEqual(self.client.frames()[0].close, (1011, b"agent connection lost"))

    def test_client_vanishing_closes_the_agent_with_1001(self):
        self.client.vanish()
        self.assertEqual(self.backend.frames()[0].close, (1001, b"client went away"))

    def test_half_written_frame_from_a_vanished_peer_cuts_the_other(self):
        whole = frame(BINARY, b"x" * 1000, mask=None)
        self.backend.send(whole[:500])
        self.backend.vanish()
        self.assertTrue(self.client.transport.disconnecting)

    def test_socket_leaves_the_registry_when_both_connections_are_closed(self):
        self.client.send(close_frame(1000))
        self.client.vanish()
        self.assertEqual(len(self.harness.agent.connections), 1)
        self.backend.vanish()
        self.assertEqual(len(self.harness.agent.connections), 0)

    def test_peer_that_never_closes_is_cut_after_the_ping_timeout(self):
        self.client.vanish()
        self.harness.clock.advance(5)
        self.assertTrue(self.backend.transport.disconnecting)


class KeepaliveTests(SynchronousTestCase):
    def setUp(self):
        self.harness = RelayHarness(config=ProxyConfig(websocket=ProxyWebSocketConfig(
            handshake_timeout=10, ping_interval=30, ping_timeout=5)))
        self.client, self.backend = self.harness.open()

    def test_both_peers_are_pinged_and_their_pongs_stay_with_the_relay(self):
        self.harness.clock.advance(31)
        (ping,) = self.client.frames()
        (backend_ping,) = self.backend.frames()
        self.assertEqual((ping.opcode, backend_ping.opcode), (PING, PING))
        self.client.send(frame(PONG, ping.payload))
        self.assertEqual(self.backend.frames(), [])

    def test_peer_not_answering_a_ping_is_dropped_and_the_other_told(self):
        self.harness.clock.advance(31)
        self.client.frames()
        self.backend.frames()
        self.backend.send(frame(PONG, b"", mask=None))  # not the answer
        self.harness.clock.advance(6)
        self.assertTrue(self.client.transport.disconnecting)

    def test_keepalive_ping_waits_for_a_half_written_frame(self):
        whole = frame(BINARY, b"y" * 1000)
        self.client.send(whole[:600])
        self.harness.clock.advance(31)
        self.assertEqual([f.opcode for f in self.backend.frames()], [])
        self.client.send(whole[600:])
        self.assertEqual([f.opcode for f in self.backend.frames()], [BINARY, PING])


class FlowControlTests(SynchronousTestCase):
    def test_agent_slow_to_read_pauses_reading_from_the_client(self):
        harness = RelayHarness()
        client, backend = harness.open()
        backend.transport.producer.pauseProducing()
        self.assertEqual(client.transport.producerState, "paused")
        backend.transport.producer.resumeProducing()
        self.assertEqual(client.transport.producerState, "producing")

    def test_client_slow_to_read_pauses_reading_from_the_agent(self):
        harness = RelayHarness()
        client, backend = harness.open()
        client.transport.producer.pauseProducing()
        self.assertEqual(backend.transport.producerState, "paused")

    def test_a_lost_peer_unpauses_the_other(self):
        harness = RelayHarness()
        client, backend = harness.open()
        backend.transport.producer.pauseProducing()
        backend.vanish()
        self.assertEqual(client.transport.producerState, "producing")
