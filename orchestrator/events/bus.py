"""
Structured events: typed records, the bus that fans them out, and the consumer interface.

Every event is also a C{twisted.logger} event (namespace C{orchestrator.events}) whose
fields are machine-readable: C{event} (the type), C{agent}, and the event's own fields.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import Interface, implementer

log = Logger(namespace="orchestrator.events")


@attrs.frozen
class Event:
    """
    Something that happened to an agent (or to the orchestrator, with C{agent=None}).
    """

    #: Dotted type, e.g. C{agent.wake}, C{agent.degraded}, C{restart.exhausted}.
    type: str
    agent: str | None
    #: POSIX time (seconds) from the injected clock.
    time: float
    fields: Mapping[str, Any] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """
        The event as one flat JSON-ready mapping (the wire form for every consumer).
        """
        return {**self.fields, "event": self.type, "agent": self.agent, "time": self.time}


class IEventConsumer(Interface):
    """
    Something that wants events (a log file, a webhook, Slack, metrics).
    """

    def consume(event: Event) -> None:  # type: ignore[misc]
        """
        Take one event. Must not block and must not raise; slow work is queued.
        """


class EventBus:
    """
    Publishes each event to the log and to every consumer. A consumer that raises is
    logged and skipped: it never affects the publisher (the proxy, a policy).
    """

    def __init__(self, clock) -> None:
        self._clock = clock
        self._consumers: list[IEventConsumer] = []

    def subscribe(self, consumer: IEventConsumer) -> None:
        self._consumers.append(consumer)

    def unsubscribe(self, consumer: IEventConsumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    def emit(self, type: str, agent: str | None, **fields: Any) -> Event:
        """
        Build an event stamped with the clock's time and publish it.
        """
        event = Event(type, agent, self._clock.seconds(), fields)
        self.publish(event)
        return event

    def publish(self, event: Event) -> None:
        log.info(
            "{event}: {subject} {details}",
            event=event.type,
            agent=event.agent,
            subject=event.agent or "orchestrator",
            details=" ".join(f"{key}={value}" for key, value in event.fields.items()),
            orchestrator_event=event.as_dict(),
        )
        for consumer in list(self._consumers):
            try:
                consumer.consume(event)
            except Exception:
                log.failure("event consumer {consumer!r} failed", consumer=consumer)


def event_matches(patterns: Iterable[str], event_type: str) -> bool:
    """
    Whether C{event_type} matches one of C{patterns}: exact names or shell-style
    wildcards (C{agent.*}, C{*}).
    """
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)


@implementer(IEventConsumer)
class FilteredConsumer:
    """
    Hands a consumer only the events whose type matches one of C{patterns}.
    """

    def __init__(self, consumer: IEventConsumer, patterns: Iterable[str]) -> None:
        self.consumer = consumer
        self.patterns = tuple(patterns)

    def consume(self, event: Event) -> None:
        if event_matches(self.patterns, event.type):
            self.consumer.consume(event)

    def __repr__(self) -> str:
        return f"<FilteredConsumer {self.patterns!r} {self.consumer!r}>"
