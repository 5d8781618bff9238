"""
The client's reading of a text/event-stream: the same messages however the bytes are
cut, every line ending the standard allows, comments and control messages.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.admin.client import SSEMessage, SSEParser, stream_event
from orchestrator.admin.stream import EventId, heartbeat_message, sse_message

_messages = st.lists(st.tuples(
    st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=20), max_size=3),
    st.none() | st.builds(EventId, st.from_regex(r"[0-9a-z]{1,8}", fullmatch=True),
                          st.integers(0, 10**6)),
    st.none() | st.sampled_from(["gap", "dropped"])), max_size=5)


def read(chunks) -> list[SSEMessage]:
    parser = SSEParser()
    out = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


class SSEParserTests(SynchronousTestCase):
    @given(_messages, st.lists(st.integers(0, 400), max_size=6))
    def test_the_server_messages_read_back_however_they_are_cut(self, messages, cuts):
        wire = b"retry: 2000\n\n" + heartbeat_message(1.0).join(
            sse_message(data, id=event_id, event=name) for data, event_id, name in messages)
        bounds = sorted({0, len(wire), *(min(cut, len(wire)) for cut in cuts)})
        chunks = [wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        whole = read([wire])
        self.assertEqual(read(chunks), whole)
        self.assertEqual(len(whole), len(messages))
        for (data, _event_id, name), message in zip(messages, whole, strict=True):
            event = stream_event(message)
            self.assertEqual(message.event, name)
            if name is None:
                self.assertEqual(event, data)

    def test_crlf_and_cr_end_lines_too(self):
        self.assertEqual(read([b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]),
                         [SSEMessage("a"), SSEMessage("b"), SSEMessage("c")])

    def test_a_cr_at_the_end_of_a_chunk_waits_for_the_next(self):
        self.assertEqual(read([b"data: a\r", b"\n\r", b"\n"]), [SSEMessage("a")])

    def test_multiline_data_and_the_last_id_are_kept(self):
        self.assertEqual(read([b"id: x.1\ndata: a\ndata: b\n\ndata: c\n\n"]),
                         [SSEMessage("a\nb", None, "x.1"), SSEMessage("c", None, "x.1")])

    def test_control_messages_become_stream_events(self):
        self.assertEqual(stream_event(SSEMessage('{"error": "slow"}', "dropped")),
                         {"error": "slow", "event": "stream.dropped"})
        self.assertIsNone(stream_event(SSEMessage("not json")))
