"""
The JSON-lines consumer: each event as one line of JSON appended to a file.
"""

from __future__ import annotations

import json
import os

from twisted.application.service import Service
from zope.interface import implementer

from orchestrator.events.bus import Event, EventBus, IEventConsumer


@implementer(IEventConsumer)
class JsonLinesConsumer:
    """
    Appends each event as one JSON line to a file object (flushed per event, so a
    C{tail -f} or a log shipper sees it at once).
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def consume(self, event: Event) -> None:
        self._stream.write(json.dumps(event.as_dict(), default=str) + "\n")
        self._stream.flush()


class JsonLinesFile(Service):
    """
    The events file (C{events.log_file}): opened for appending when the service starts
    (its directory made if missing), fed by the bus while it runs, closed when it stops.
    """

    def __init__(self, path: str, bus: EventBus) -> None:
        self.path = path
        self._bus = bus
        self._stream = None
        self._consumer: JsonLinesConsumer | None = None

    def startService(self) -> None:
        super().startService()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._stream = open(self.path, "a", encoding="utf-8")
        self._consumer = JsonLinesConsumer(self._stream)
        self._bus.subscribe(self._consumer)

    def stopService(self) -> None:
        super().stopService()
        if self._consumer is not None:
            self._bus.unsubscribe(self._consumer)
            self._consumer = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
