"""
The JSON-lines consumer: each event as one line of JSON appended to a file.
"""

from __future__ import annotations

import json

from twisted.logger import Logger
from zope.interface import implementer

from orchestrator.events.bus import Event, IEventConsumer

log = Logger(namespace="orchestrator.events")


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
