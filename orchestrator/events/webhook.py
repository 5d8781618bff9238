"""
The webhook consumer: each event as one JSON POST to a URL.

Events wait in a bounded queue (full: the oldest is dropped, and counted) and are sent
one at a time by a loop of this consumer's own, so L{WebhookConsumer.consume} returns at
once whatever the receiver does: the proxy and the policies never wait for it. A failed
POST is retried after a doubling delay on the injected clock; after C{retries} more
attempts the event is given up (and counted).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import treq
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from orchestrator.events.bus import Event, IEventConsumer
from orchestrator.flows import backoff_delay, log_unless_cancelled
from orchestrator.http.errors import describe_connection_error

log = Logger()

USER_AGENT = b"orchestrator-events/1"
#: The longest wait between two attempts, however many failed.
MAX_BACKOFF = 60.0


def retry_delay(attempt: int, first: float, most: float = MAX_BACKOFF) -> float:
    """
    Seconds to wait before attempt number C{attempt} (1 for the first retry).
    """
    return backoff_delay(attempt - 1, first, most)


def event_json(event: Event) -> dict[str, Any]:
    """
    The webhook body: the event's flat JSON form (C{event}, C{agent}, C{time} and its
    fields).
    """
    return event.as_dict()


def http_client(reactor, timeout: float) -> treq.client.HTTPClient:
    """
    A treq client that opens a connection per POST (events are rare; nothing is left
    open between them) and gives up connecting after C{timeout} seconds.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    return treq.client.HTTPClient(Agent(reactor, connectTimeout=timeout, pool=pool))


@implementer(IEventConsumer)
class WebhookConsumer(Service):
    """
    POSTs events to C{url} while running; events consumed before it starts wait in the
    queue.

    @param url: where to POST. It may hold a secret: only its host is ever logged.
    @param clock: the C{IReactorTime} for timeouts and retry delays.
    @param http: something with treq's C{post}; by default a treq client on C{reactor}.
    @param render: an event -> the JSON document to send.

    @ivar delivered: events the receiver accepted (any 2xx).
    @ivar failed: events given up after every attempt, or refused with a 4xx.
    @ivar dropped: events dropped from a full queue.
    """

    kind = "webhook"

    def __init__(self, url: str, *, clock, reactor=None, http=None, timeout: float = 5.0,
                 retries: int = 5, backoff: float = 1.0, queue_size: int = 1000,
                 render: Callable[[Event], dict[str, Any]] = event_json) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.queue_size = queue_size
        self._clock = clock
        self._http = http if http is not None else http_client(reactor or clock, timeout)
        self._render = render
        self._queue: deque[Event] = deque()
        self._sending: Deferred | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.name = f"{self.kind} {urlsplit(url).hostname}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def queued(self) -> int:
        """
        Events waiting to be sent (not counting the one being sent).
        """
        return len(self._queue)

    # IEventConsumer ---------------------------------------------------------------------

    def consume(self, event: Event) -> None:
        if len(self._queue) >= self.queue_size:
            self._queue.popleft()
            self.dropped += 1
            # Logged at 1, 10, 100, ... drops: a flood must not flood the log too.
            if str(self.dropped).strip("0") == "1":
                log.warn("{consumer}: queue full ({size}), dropped the oldest event "
                         "({dropped} so far)", consumer=self.name, size=self.queue_size,
                         dropped=self.dropped)
        self._queue.append(event)
        self._send_queued()

    # Lifecycle --------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._send_queued()

    def stopService(self) -> Deferred:
        """
        Stop sending at once: the POST in flight is cancelled, the queue is left unsent
        (and logged).
        """
        super().stopService()
        if self._queue or self._sending is not None:
            log.info("{consumer}: stopping with {count} events unsent", consumer=self.name,
                     count=len(self._queue) + (self._sending is not None))
        if self._sending is not None:
            self._sending.cancel()
        return succeed(None)

    # Sending ----------------------------------------------------------------------------

    def _send_queued(self) -> None:
        if not self.running or self._sending is not None or not self._queue:
            return
        sending = Deferred.fromCoroutine(self._send_all())
        sending.addErrback(log_unless_cancelled, log, "{consumer} failed", consumer=self.name)
        if not sending.called:
            self._sending = sending

            def finished(_: object) -> None:
                self._sending = None

            sending.addBoth(finished)

    async def _send_all(self) -> None:
        while self._queue and self.running:
            await self._deliver(self._queue.popleft())

    async def _deliver(self, event: Event) -> None:
        body = json.dumps(self._render(event), default=str).encode("utf-8")
        problem = ""
        attempts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                await deferLater(self._clock, retry_delay(attempt, self.backoff))
            attempts += 1
            try:
                code = await self._post(body)
            except TimeoutError:
                problem = f"no answer within {self.timeout:g}s"
            except Exception as error:
                if not self.running:
                    # Stopped: the POST was cancelled (treq may report it otherwise).
                    raise CancelledError() from error
                problem = describe_connection_error(error)
            else:
                if 200 <= code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {code}"
                if 400 <= code < 500 and code not in (408, 429):
                    break  # The receiver refuses this event: asking again will not help.
        self.failed += 1
        log.warn("{consumer}: gave up sending {event_type} of {agent} after {attempts} "
                 "attempts: {problem}", consumer=self.name, event_type=event.type,
                 agent=event.agent, attempts=attempts, problem=problem)

    async def _post(self, body: bytes) -> int:
        """
        POST C{body}; return the status once the response is read (so the connection is
        done with), all within C{timeout}.
        """
        exchange = Deferred.fromCoroutine(self._exchange(body))
        exchange.addTimeout(self.timeout, self._clock)
        return await exchange

    async def _exchange(self, body: bytes) -> int:
        response = await self._http.post(
            self.url, data=body,
            headers={b"Content-Type": [b"application/json"], b"User-Agent": [USER_AGENT]},
        )
        await treq.content(response)
        return response.code
