"""
The metrics that are events: counted as they happen, from the event bus (every event
by type, each wake by outcome with its duration and its phases) and from the HTTP path's
meter (requests, their durations, relayed WebSocket frames).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from zope.interface import implementer

from orchestrator.event_types import EVENT_TYPES
from orchestrator.events.bus import Event, IEventConsumer
from orchestrator.meters import TO_AGENT, TO_CLIENT, ITrafficMeter

#: Seconds; a wake on a warm Swarm takes about 1 s, a cold image pull can take minutes.
WAKE_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0)
#: Seconds; a phase is a part of a wake.
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: Seconds, from the headers in to the answer's last byte (long-polls and held
#: requests included, up to the minute).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: The methods counted by name; any other is C{other}, so a client cannot add series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: The label of requests for a host no agent serves.
NO_AGENT = ""

#: Outcomes of a wake.
READY, FAILED = "ready", "failed"


def method_class(method: bytes) -> str:
    """
    The C{method} label: the method's name if it is a common one, else C{other}.
    """
    name = method.decode("latin-1").upper()
    return name if name in METHODS else "other"


def status_class(code: int) -> str:
    """
    The C{code} label: C{2xx}, C{4xx}, ...; anything outside 100-599 is C{other}.
    """
    return f"{code // 100}xx" if 100 <= code <= 599 else "other"


@implementer(IEventConsumer)
class EventMetrics:
    """
    Counts every event by type, and turns wakes into counters and histograms.

    A wake ends with C{agent.ready} (whose C{wake_seconds} and C{phases} it carries) or
    with C{agent.degraded} from C{starting}, whose duration is measured from the
    C{agent.wake} that began it.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("orchestrator_events", "Events published on the event bus.",
                              ("type",), registry=registry)
        for event_type in EVENT_TYPES:
            self.events.labels(event_type)
        self.wakes = Counter("orchestrator_wakes", "Wakes that ended, by outcome.",
                             ("agent", "outcome"), registry=registry)
        self.wake_seconds = Histogram(
            "orchestrator_wake_duration_seconds", "How long wakes took, by outcome.",
            ("agent", "outcome"), buckets=WAKE_BUCKETS, registry=registry)
        self.phase_seconds = Histogram(
            "orchestrator_wake_phase_duration_seconds",
            "How long each phase of a successful wake took (queued, scheduling, probing).",
            ("agent", "phase"), buckets=PHASE_BUCKETS, registry=registry)
        self.restarts_exhausted = Counter(
            "orchestrator_restarts_exhausted",
            "Times Swarm gave up restarting the agent's service (restart.exhausted).",
            ("agent",), registry=registry)
        self._wake_started: dict[str, float] = {}

    def consume(self, event: Event) -> None:
        self.events.labels(event.type).inc()
        agent, fields = event.agent, event.fields
        if agent is None:
            return
        if event.type == "restart.exhausted":
            self.restarts_exhausted.labels(agent).inc()
        elif event.type == "agent.wake":
            self._wake_started[agent] = event.time
        elif event.type == "agent.ready" and "wake_seconds" in fields:
            self._wake_started.pop(agent, None)
            self.wakes.labels(agent, READY).inc()
            self.wake_seconds.labels(agent, READY).observe(float(fields["wake_seconds"]))
            for phase, seconds in (fields.get("phases") or {}).items():
                self.phase_seconds.labels(agent, phase).observe(float(seconds))
        elif event.type == "agent.degraded" and fields.get("previous") == "starting":
            started = self._wake_started.pop(agent, None)
            self.wakes.labels(agent, FAILED).inc()
            if started is not None:
                self.wake_seconds.labels(agent, FAILED).observe(max(event.time - started, 0.0))

    def forget(self, agent: str) -> None:
        """
        The agent is gone: its series go too, so labels stay those of configured agents.
        """
        self._wake_started.pop(agent, None)
        for metric in (self.wakes, self.wake_seconds, self.phase_seconds,
                       self.restarts_exhausted):
            metric.remove_by_labels({"agent": agent})


@implementer(ITrafficMeter)
class TrafficMetrics:
    """
    The HTTP path's meter: requests by agent, method and status class, their durations,
    and relayed WebSocket frames by direction.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "orchestrator_http_requests", "Requests the proxy answered.",
            ("agent", "method", "code"), registry=registry)
        self.durations = Histogram(
            "orchestrator_http_request_duration_seconds",
            "Time from a request's headers to the end of its answer.",
            ("agent",), buckets=REQUEST_BUCKETS, registry=registry)
        self._request_children: dict[tuple, tuple] = {}
        self._frame_children: dict[tuple, object] = {}
        self.frames = Counter(
            "orchestrator_websocket_frames", "WebSocket data frames relayed, by direction.",
            ("agent", "direction"), registry=registry)

    def request_finished(self, agent: str | None, method: bytes, code: int,
                         seconds: float) -> None:
        name = NO_AGENT if agent is None else agent
        # The key is the labels themselves, never the raw method: what a client sends
        # must not grow this.
        key = (name, method_class(method), status_class(code))
        children = self._request_children.get(key)
        if children is None:
            # labels() checks and locks each time: half of the cost of a count, on the
            # path of every request. The children are kept (bounded: agents x method
            # classes x status classes) and dropped with their agent.
            children = self._request_children[key] = (
                self.requests.labels(*key), self.durations.labels(name))
        children[0].inc()
        children[1].observe(max(seconds, 0.0))

    def frame_relayed(self, agent: str, direction: str) -> None:
        key = (agent, direction)
        child = self._frame_children.get(key)
        if child is None:
            child = self._frame_children[key] = self.frames.labels(
                agent, direction if direction in (TO_AGENT, TO_CLIENT) else "other")
        child.inc()

    def forget(self, agent: str) -> None:
        for metric in (self.requests, self.durations, self.frames):
            metric.remove_by_labels({"agent": agent})
        for children in (self._request_children, self._frame_children):
            for key in [key for key in children if key[0] == agent]:
                del children[key]
