"""
The event bus as a server-sent event stream (C{GET /api/events}): every event gets an
id, the latest are kept in a bounded buffer so a client that reconnects with
C{Last-Event-ID} misses nothing still buffered, a comment line every C{heartbeat}
seconds keeps proxies and clients from timing the stream out, and the number of
subscribers is capped.

A subscriber that does not read is never allowed to grow memory: each is the producer
of its connection, so the transport tells it when its buffer is full; events then wait
in a queue of its own, bounded, and a subscriber whose queue overflows is dropped with
a final C{dropped} event.

The wire format (the HTML standard's C{text/event-stream}) is written here: no kept
library writes it for twisted.web, and it is three lines per event.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from orchestrator.events.bus import Event, IEventConsumer
from orchestrator.flows import cancel_call

log = Logger()

_EVENT_ID = re.compile(r"([0-9a-z]{1,16})\.([0-9]{1,18})")


@attrs.frozen(order=True)
class EventId:
    """
    An event's place in the stream: the process it came from (C{boot}: an orchestrator
    that restarted numbers its events afresh) and its number there.
    """

    boot: str
    seq: int

    def __str__(self) -> str:
        return f"{self.boot}.{self.seq}"


def parse_event_id(text: str | bytes | None) -> EventId | None:
    """
    A C{Last-Event-ID} as sent back by a client, or C{None} if there is none or it is
    not one of ours (then the client gets what is buffered, after a gap marker).
    """
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    found = _EVENT_ID.fullmatch(text.strip())
    if found is None:
        return None
    return EventId(found.group(1), int(found.group(2)))


@attrs.frozen
class StreamedEvent:
    """
    An event with its id.
    """

    id: EventId
    event: Event

    def as_dict(self) -> dict:
        return {"id": str(self.id), **self.event.as_dict()}


def sse_message(data: dict, *, id: EventId | None = None, event: str | None = None) -> bytes:
    """
    One message of a C{text/event-stream}: optional C{id} and C{event} lines, the JSON
    data on one line (JSON never holds a raw newline), and the blank line that ends it.
    """
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, default=str, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def heartbeat_message(now: float) -> bytes:
    """
    A comment line: ignored by every client, it keeps the connection from looking idle.
    """
    return f": heartbeat {now:.0f}\n\n".encode("ascii")


@implementer(IEventConsumer)
class EventBuffer:
    """
    The latest C{size} events of the bus, each with its id.
    """

    def __init__(self, boot: str, size: int) -> None:
        self.boot = boot
        self._events: deque[StreamedEvent] = deque(maxlen=size)
        self._next = 1
        self.listeners: list[Callable[[StreamedEvent], None]] = []

    def resize(self, size: int) -> None:
        """
        Keep C{size} events from now on (the newest, if there were more).
        """
        if size != self._events.maxlen:
            self._events = deque(self._events, maxlen=size)

    def consume(self, event: Event) -> None:
        streamed = StreamedEvent(EventId(self.boot, self._next), event)
        self._next += 1
        self._events.append(streamed)
        for listener in list(self.listeners):
            listener(streamed)

    @property
    def last_id(self) -> EventId | None:
        """
        The id of the newest event, or C{None} before the first.
        """
        return self._events[-1].id if self._events else None

    def recent(self) -> tuple[StreamedEvent, ...]:
        return tuple(self._events)

    def since(self, last: EventId | None) -> tuple[tuple[StreamedEvent, ...], bool]:
        """
        The buffered events after C{last}, and whether some may be missing between
        C{last} and them (an id of another run, or one the buffer has forgotten).
        C{None} asks for nothing: a new subscriber starts with the next event.
        """
        if last is None:
            return (), False
        events = tuple(self._events)
        if last.boot != self.boot:
            return events, True
        if last.seq >= self._next - 1:
            return (), False
        oldest = events[0].id.seq if events else self._next
        return tuple(e for e in events if e.id.seq > last.seq), last.seq < oldest - 1


@implementer(IPushProducer)
class Subscriber:
    """
    One client of the stream, writing to its request. The transport pauses it when its
    buffer is full; meanwhile events wait in a queue of at most C{queue_size}, and one
    more drops the subscriber.
    """

    def __init__(self, request, *, queue_size: int, on_close: Callable[[Subscriber], None],
                 clock) -> None:
        self._request = request
        self._queue: deque[bytes] = deque()
        self._queue_size = queue_size
        self._on_close = on_close
        self._clock = clock
        self._paused = False
        self._closed = False
        #: Why it was dropped, if it was.
        self.dropped: str | None = None
        #: Fires when the stream is over (closed, dropped, or the client left).
        self.ended: Deferred = Deferred()
        self._abort_call = None
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, message: bytes) -> None:
        """
        Write C{message} now, or queue it while the client is slow; drop the client if
        it is too slow.
        """
        if self._closed:
            return
        if not self._paused:
            self._request.write(message)
            return
        if len(self._queue) >= self._queue_size:
            self.drop(f"the client read too slowly: {self._queue_size} events were waiting")
            return
        self._queue.append(message)

    def drop(self, reason: str) -> None:
        """
        End the stream with a final C{dropped} event; a client that does not read it
        within a few seconds has its connection cut, so nothing stays buffered for it.
        """
        if self._closed:
            return
        self.dropped = reason
        self._queue.clear()
        self._request.write(sse_message({"error": reason}, event="dropped"))
        transport = self._request.channel.transport if self._request.channel else None
        self.close()
        if transport is not None:
            self._abort_call = self._clock.callLater(5.0, transport.abortConnection)

    def close(self) -> None:
        """
        End the stream (the orchestrator stops, or the client is dropped).
        """
        if self._closed:
            return
        self._closed = True
        self._request.unregisterProducer()
        self._request.finish()
        self._on_close(self)

    # IPushProducer ----------------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._queue and not self._paused and not self._closed:
            self._request.write(self._queue.popleft())

    def stopProducing(self) -> None:
        self._queue.clear()

    def _finished(self, result) -> None:
        # The client went away (or the request was finished by close).
        if isinstance(result, Failure):
            result.trap(Exception)
        self._abort_call = cancel_call(self._abort_call)
        if not self._closed:
            self._closed = True
            self._on_close(self)
        if not self.ended.called:
            self.ended.callback(None)


class TooManySubscribers(Exception):
    """
    The stream has as many subscribers as it may.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the event stream has {limit} subscribers, the most allowed")
        self.limit = limit


class EventStream:
    """
    The subscribers of the event buffer, their heartbeat, and their cap.

    @ivar dropped: subscribers dropped for reading too slowly (a counter).
    """

    def __init__(self, buffer: EventBuffer, *, clock, max_subscribers: int,
                 queue_size: int, heartbeat: float) -> None:
        self.buffer = buffer
        self._clock = clock
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self._subscribers: set[Subscriber] = set()
        self.dropped = 0
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock
        buffer.listeners.append(self._publish)

    def reconfigure(self, *, max_subscribers: int, queue_size: int, heartbeat: float) -> None:
        """
        Take up changed limits (a reload): new subscribers get them; a change of the
        heartbeat applies from the next beat.
        """
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        if heartbeat != self.heartbeat:
            self.heartbeat = heartbeat
            if self._loop.running:
                self._loop.stop()
                self._loop.start(heartbeat, now=False)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, request, last: EventId | None) -> Subscriber:
        """
        Stream to C{request} from after C{last}: the buffered events first (after a
        C{gap} event if some may be missing), then each new one.

        @raise TooManySubscribers: if the cap is reached.
        """
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManySubscribers(self.max_subscribers)
        subscriber = Subscriber(request, queue_size=self.queue_size, clock=self._clock,
                                on_close=self._closed)
        self._subscribers.add(subscriber)
        # The client reconnects after 2 s if the connection drops.
        subscriber.send(b"retry: 2000\n\n")
        replay, gap = self.buffer.since(last)
        if gap:
            subscriber.send(sse_message(
                {"error": "some events were missed: the buffer no longer holds them",
                 "last_event_id": None if last is None else str(last)}, event="gap"))
        for streamed in replay:
            subscriber.send(sse_message(streamed.as_dict(), id=streamed.id))
        if not self._loop.running and self.heartbeat > 0:
            self._loop.start(self.heartbeat, now=False)
        return subscriber

    def _closed(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if subscriber.dropped is not None:
            self.dropped += 1
            log.warn("dropped an event-stream subscriber: {reason} ({count} so far)",
                     reason=subscriber.dropped, count=self.dropped,
                     event="admin.subscriber_dropped")

    def _publish(self, streamed: StreamedEvent) -> None:
        message = sse_message(streamed.as_dict(), id=streamed.id)
        for subscriber in list(self._subscribers):
            subscriber.send(message)

    def _beat(self) -> None:
        if not self._subscribers:
            self._loop.stop()
            return
        message = heartbeat_message(self._clock.seconds())
        for subscriber in list(self._subscribers):
            subscriber.send(message)

    def close(self, subscribers: Iterable[Subscriber] | None = None) -> None:
        """
        End every stream (the orchestrator stops): clients reconnect to the next one.
        """
        for subscriber in list(self._subscribers if subscribers is None else subscribers):
            subscriber.close()
        if self._loop.running:
            self._loop.stop()
