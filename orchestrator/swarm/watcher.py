"""
The Swarm event watcher: the engine's events, as they happen, make the agents they
concern read their service again at once instead of at their next poll.

The watcher only nudges its listener (L{ISwarmListener}: the registry of agents, which
hands the news to the agents of that service); each agent reads Swarm and decides for
itself. When the engine goes away the watcher subscribes again
with a growing delay, and once subscribed it has every agent read its service, so what
happened meanwhile is not missed. Polling (the health loop) stays as the safety net.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from zope.interface import Interface

from orchestrator.events.bus import EventBus
from orchestrator.flows import backoff_delay, cancel_call, follow
from orchestrator.swarm.values import SwarmEvent

log = Logger()

#: The first delay before subscribing again after the stream was lost, doubled after
#: each failed attempt up to C{max_delay}.
FIRST_RETRY = 0.5
MAX_RETRY = 30.0


def reconnect_delay(failures: int, first: float = FIRST_RETRY, most: float = MAX_RETRY) -> float:
    """
    Seconds to wait before subscribing again after C{failures} failed attempts in a row
    (0 right after the stream was lost).
    """
    return backoff_delay(failures, first, most)


class ISwarmListener(Interface):
    """
    Who hears what the watcher learns.
    """

    def watches(service: str) -> bool:  # type: ignore[misc]
        """
        Whether news of C{service} concerns anyone (else it is dropped at once).
        """

    def service_changed(service: str, events: tuple[SwarmEvent, ...]) -> None:  # type: ignore[misc]
        """
        Swarm reported C{events} about C{service}.
        """

    def nodes_changed(events: tuple[SwarmEvent, ...]) -> None:  # type: ignore[misc]
        """
        Swarm reported C{events} about its nodes (one joined, was drained, went down).
        """

    def everything_changed() -> None:  # type: ignore[misc]
        """
        The stream (re)opened: what happened while it was not open is unknown, so every
        service should be read again.
        """


class SwarmWatcher(Service):
    """
    Subscribes to Swarm's events for as long as it runs, and hands its listener the
    events of each watched service (those of one reactor turn together, so a burst is
    read once).

    @param swarm: an L{orchestrator.swarm.values.ISwarm}.
    @param listener: an L{ISwarmListener}.
    @param bus: where C{swarm.disconnected} and C{swarm.reconnected} are published.
    @param clock: an C{IReactorTime} for the reconnect delays.
    """

    def __init__(self, swarm, listener: ISwarmListener, *, bus: EventBus, clock,
                 max_delay: float = MAX_RETRY) -> None:
        self._swarm = swarm
        self._listener = listener
        self._bus = bus
        self._clock = clock
        self._max_delay = max_delay
        self._subscription = None
        self._connecting: Deferred | None = None
        self._retry = None
        #: Failed attempts to subscribe since the stream was last open.
        self._failures = 0
        #: When the stream was lost (or first failed to open); None while it is open.
        self._lost_at: float | None = None
        self._pending: dict[str, list[SwarmEvent]] = {}
        self._flush = None

    @property
    def connected(self) -> bool:
        """
        Whether the event stream is open.
        """
        return self._subscription is not None

    # Lifecycle ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._subscribe()

    def stopService(self) -> Deferred:
        """
        End the subscription (and one being made); fire once it has ended.
        """
        super().stopService()
        self._retry = cancel_call(self._retry)
        self._flush = cancel_call(self._flush)
        self._pending = {}
        ended = []
        if self._subscription is not None:
            ended.append(self._subscription.stop())
            self._subscription = None
        if self._connecting is not None:
            # _subscribed stops a subscription that arrives after this.
            ended.append(follow(self._connecting))
        return gatherResults(ended).addCallback(lambda _: None)

    # Subscribing ----------------------------------------------------------------------

    def _subscribe(self) -> None:
        self._retry = None
        connecting = self._connecting = self._swarm.events(self._received)
        connecting.addCallbacks(self._subscribed, self._not_subscribed)
        connecting.addErrback(lambda failure: log.failure(
            "the Swarm event watcher failed", failure))

    def _subscribed(self, subscription):
        self._connecting = None
        if not self.running:
            return subscription.stop()
        self._subscription = subscription
        subscription.ended.addCallbacks(lambda _: None, self._lost, errbackArgs=(subscription,))
        if self._lost_at is not None:
            outage = self._clock.seconds() - self._lost_at
            self._bus.emit("swarm.reconnected", None, outage=round(outage, 3),
                           attempts=self._failures + 1)
        self._lost_at = None
        self._failures = 0
        log.info("watching Swarm events")
        # Read everything again: what happened before the stream opened is not missed.
        self._listener.everything_changed()
        return None

    def _not_subscribed(self, failure) -> None:
        self._connecting = None
        if not self.running:
            return
        self._went_away(failure.getErrorMessage())
        self._failures += 1
        self._schedule_subscribe()

    def _lost(self, failure, subscription) -> None:
        if self._subscription is subscription:
            self._subscription = None
        if not self.running:
            return
        self._went_away(failure.getErrorMessage())
        self._schedule_subscribe()

    def _went_away(self, reason: str) -> None:
        if self._lost_at is None:
            self._lost_at = self._clock.seconds()
            self._bus.emit("swarm.disconnected", None, reason=reason)

    def _schedule_subscribe(self) -> None:
        delay = reconnect_delay(self._failures, most=self._max_delay)
        log.info("subscribing to Swarm events again in {delay:g}s", delay=delay,
                 failures=self._failures)
        self._retry = self._clock.callLater(delay, self._subscribe)

    # Events ---------------------------------------------------------------------------

    def _received(self, event: SwarmEvent) -> None:
        # Node events are kept under the empty name (no service has it).
        if event.kind != "node" and not self._listener.watches(event.service):
            return
        self._pending.setdefault(event.service, []).append(event)
        if self._flush is None:
            self._flush = self._clock.callLater(0, self._nudge)

    def _nudge(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, {}
        for service, events in pending.items():
            if service:
                self._listener.service_changed(service, tuple(events))
            else:
                self._listener.nodes_changed(tuple(events))
