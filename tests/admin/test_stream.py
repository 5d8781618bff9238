"""
The event stream: ids and Last-Event-ID, the bounded buffer and resuming from it,
heartbeats, the subscriber cap, and slow clients that never grow memory.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.admin.stream import (
    EventBuffer,
    EventId,
    EventStream,
    TooManySubscribers,
    parse_event_id,
    sse_message,
)
from orchestrator.events.bus import EventBus


class FakeTransport:
    def __init__(self):
        self.aborted = False

    def abortConnection(self):
        self.aborted = True


class FakeChannel:
    def __init__(self):
        self.transport = FakeTransport()


class FakeRequest:
    """
    The part of a twisted.web request a subscriber uses; it records what is written.
    """

    def __init__(self):
        self.written: list[bytes] = []
        self.finished = False
        self.producer = None
        self.channel = FakeChannel()
        self._finish_waiters: list[Deferred] = []

    def write(self, data):
        assert not self.finished, "write after finish"
        self.written.append(data)

    def finish(self):
        self.finished = True
        for waiter in self._finish_waiters:
            waiter.callback(None)

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def notifyFinish(self):
        waiter = Deferred()
        self._finish_waiters.append(waiter)
        return waiter

    def client_leaves(self):
        for waiter in self._finish_waiters:
            waiter.errback(ConnectionError("gone"))

    def messages(self):
        """
        The SSE messages written, parsed: (event name, id, data) for each data message.
        """
        text = b"".join(self.written).decode()
        out = []
        for block in text.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines()
                          if ": " in line and not line.startswith(":"))
            if "data" in fields:
                out.append((fields.get("event"), fields.get("id"), json.loads(fields["data"])))
        return out

    def event_types(self):
        return [data.get("event") for name, _, data in self.messages() if name is None]


def make_stream(buffer_size=10, max_subscribers=3, queue_size=4, heartbeat=15.0):
    clock = Clock()
    clock.advance(1000)
    bus = EventBus(clock)
    buffer = EventBuffer("b00t", buffer_size)
    bus.subscribe(buffer)
    stream = EventStream(buffer, clock=clock, max_subscribers=max_subscribers,
                         queue_size=queue_size, heartbeat=heartbeat)
    return clock, bus, stream


class EventIdTests(SynchronousTestCase):
    @given(st.from_regex(r"[0-9a-z]{1,16}", fullmatch=True), st.integers(0, 10**18 - 1))
    def test_an_id_reads_back_as_itself(self, boot, seq):
        event_id = EventId(boot, seq)
        self.assertEqual(parse_event_id(str(event_id)), event_id)
        self.assertEqual(parse_event_id(str(event_id).encode()), event_id)

    @given(st.one_of(st.text(), st.binary(), st.none()))
    def test_anything_else_is_no_id_and_never_an_error(self, text):
        parsed = parse_event_id(text)
        if parsed is not None:
            self.assertEqual(parse_event_id(str(parsed)), parsed)

    def test_examples(self):
        self.assertEqual(parse_event_id(" 18c2f.42 "), EventId("18c2f", 42))
        for junk in ("", "42", "a.b", "A.1", "a.-1", "a.1.2", "a" * 17 + ".1"):
            self.assertIsNone(parse_event_id(junk), junk)


class BufferTests(SynchronousTestCase):
    def setUp(self):
        self.clock, self.bus, self.stream = make_stream(buffer_size=3)
        self.buffer = self.stream.buffer
        for _ in range(5):
            self.bus.emit("agent.wake", "alpha")

    def seqs(self, last):
        events, gap = self.buffer.since(last)
        return [e.id.seq for e in events], gap

    def test_keeps_only_the_latest(self):
        self.assertEqual([e.id.seq for e in self.buffer.recent()], [3, 4, 5])

    def test_no_id_asks_for_nothing_old(self):
        self.assertEqual(self.seqs(None), ([], False))

    def test_an_id_still_buffered_gets_what_came_after(self):
        self.assertEqual(self.seqs(EventId("b00t", 3)), ([4, 5], False))
        self.assertEqual(self.seqs(EventId("b00t", 2)), ([3, 4, 5], False))
        self.assertEqual(self.seqs(EventId("b00t", 5)), ([], False))

    def test_an_id_forgotten_gets_everything_and_a_gap(self):
        self.assertEqual(self.seqs(EventId("b00t", 1)), ([3, 4, 5], True))

    def test_an_id_of_another_run_gets_everything_and_a_gap(self):
        self.assertEqual(self.seqs(EventId("0ther", 4)), ([3, 4, 5], True))

    def test_resize_keeps_the_newest(self):
        self.buffer.resize(2)
        self.assertEqual([e.id.seq for e in self.buffer.recent()], [4, 5])


class SubscriberTests(SynchronousTestCase):
    def setUp(self):
        self.clock, self.bus, self.stream = make_stream()

    def test_new_events_are_streamed_with_ids(self):
        request = FakeRequest()
        self.stream.subscribe(request, None)
        self.bus.emit("agent.wake", "alpha", previous="sleeping", state="starting")
        self.assertTrue(request.written[0].startswith(b"retry: "))
        [(name, event_id, data)] = request.messages()
        self.assertEqual((name, event_id, data["event"], data["agent"], data["id"]),
                         (None, "b00t.1", "agent.wake", "alpha", "b00t.1"))

    def test_resume_after_a_disconnect_loses_no_buffered_event(self):
        first = FakeRequest()
        self.stream.subscribe(first, None)
        for event_type in ("agent.wake", "agent.ready"):
            self.bus.emit(event_type, "alpha")
        last_seen = first.messages()[-1][1]
        first.client_leaves()
        for event_type in ("agent.sleep", "agent.wake", "agent.ready"):
            self.bus.emit(event_type, "alpha")
        second = FakeRequest()
        self.stream.subscribe(second, parse_event_id(last_seen))
        self.bus.emit("agent.sleep", "alpha")
        self.assertEqual(first.event_types(), ["agent.wake", "agent.ready"])
        self.assertEqual(second.event_types(),
                         ["agent.sleep", "agent.wake", "agent.ready", "agent.sleep"])
        self.assertEqual([m[1] for m in second.messages()],
                         ["b00t.3", "b00t.4", "b00t.5", "b00t.6"])

    def test_a_resume_past_the_buffer_is_told_of_the_gap(self):
        for _ in range(12):
            self.bus.emit("agent.wake", "alpha")
        request = FakeRequest()
        self.stream.subscribe(request, EventId("b00t", 1))
        name, _, data = request.messages()[0]
        self.assertEqual((name, data["last_event_id"]), ("gap", "b00t.1"))
        self.assertEqual(len(request.event_types()), 10)

    def test_heartbeats_keep_the_stream_alive(self):
        request = FakeRequest()
        self.stream.subscribe(request, None)
        self.clock.advance(15)
        self.clock.advance(15)
        self.assertEqual([w for w in request.written if w.startswith(b": heartbeat")],
                         [b": heartbeat 1015\n\n", b": heartbeat 1030\n\n"])

    def test_heartbeats_stop_with_the_last_subscriber(self):
        request = FakeRequest()
        self.stream.subscribe(request, None)
        request.client_leaves()
        self.clock.advance(15)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_subscriber_cap_refuses_one_more(self):
        for _ in range(3):
            self.stream.subscribe(FakeRequest(), None)
        self.assertRaises(TooManySubscribers, self.stream.subscribe, FakeRequest(), None)
        self.assertEqual(self.stream.subscriber_count, 3)

    def test_a_client_that_left_frees_its_place(self):
        requests = [FakeRequest() for _ in range(3)]
        for request in requests:
            self.stream.subscribe(request, None)
        requests[0].client_leaves()
        self.stream.subscribe(FakeRequest(), None)
        self.assertEqual(self.stream.subscriber_count, 3)

    def test_a_paused_client_gets_its_events_in_order_when_it_reads_again(self):
        request = FakeRequest()
        self.stream.subscribe(request, None)
        request.producer.pauseProducing()
        for event_type in ("agent.wake", "agent.ready", "agent.sleep"):
            self.bus.emit(event_type, "alpha")
        self.assertEqual(request.event_types(), [])
        request.producer.resumeProducing()
        self.assertEqual(request.event_types(), ["agent.wake", "agent.ready", "agent.sleep"])

    def test_a_client_that_never_reads_is_dropped_with_a_final_event(self):
        request = FakeRequest()
        subscriber = self.stream.subscribe(request, None)
        request.producer.pauseProducing()
        written_before = len(request.written)
        for _ in range(100):
            self.bus.emit("agent.wake", "alpha")
        # Its queue held at most 4; the fifth dropped it: one final message written.
        self.assertEqual(len(request.written), written_before + 1)
        name, _, data = request.messages()[-1]
        self.assertEqual(name, "dropped")
        self.assertIn("read too slowly", data["error"])
        self.assertTrue(request.finished)
        self.assertTrue(subscriber.ended.called)
        self.assertEqual((self.stream.subscriber_count, self.stream.dropped), (0, 1))

    def test_a_dropped_client_that_still_does_not_read_is_cut(self):
        request = FakeRequest()
        self.stream.subscribe(request, None)
        request.producer.pauseProducing()
        for _ in range(5):
            self.bus.emit("agent.wake", "alpha")
        self.clock.advance(5)
        self.assertTrue(request.channel.transport.aborted)

    def test_closing_the_stream_ends_every_subscriber(self):
        requests = [FakeRequest() for _ in range(2)]
        for request in requests:
            self.stream.subscribe(request, None)
        self.stream.close()
        self.assertTrue(all(request.finished for request in requests))
        self.assertEqual(self.stream.subscriber_count, 0)


class WireFormatTests(SynchronousTestCase):
    def test_a_message_is_id_event_and_one_data_line(self):
        self.assertEqual(sse_message({"a": "x\ny"}, id=EventId("b", 1), event="gap"),
                         b'id: b.1\nevent: gap\ndata: {"a":"x\\ny"}\n\n')
