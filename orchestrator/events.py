"""
Structured events: typed records, the bus that fans them out, and the consumer interface.

Every event is also a C{twisted.logger} event (namespace C{orchestrator.events}) whose
fields are machine-readable: C{event} (the type), C{agent}, and the event's own fields.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import Interface, implementer

log = Logger(namespace="orchestrator.events")

#: Every event type this program emits, with what it means (docs/events.md has the
#: fields of each). Consumers choose among them with patterns (L{event_matches}).
EVENT_TYPES: Mapping[str, str] = {
    "agent.reconciled": "the state found for an agent when the orchestrator started",
    "agent.wake": "an agent is being woken (sleeping or degraded -> starting)",
    "agent.ready": "an agent's task runs and answered its probe (starting -> ready)",
    "agent.sleep": "an agent was scaled to 0 (ready or degraded -> sleeping)",
    "agent.degraded": "an agent is degraded: wake failed, health failing, task dead, ...",
    "agent.recovered": "a degraded agent answers again (degraded -> ready)",
    "agent.health_failed": "one health probe of an agent failed",
    "restart.exhausted": "Swarm gave up restarting an agent's service (max_attempts)",
    "swarm.disconnected": "the Docker engine's event stream was lost",
    "swarm.reconnected": "the Docker engine's event stream is back",
    "config.reloaded": "the configuration file was read again and applied (SIGHUP)",
    "config.reload_failed": "the configuration file was read again and refused",
}


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
