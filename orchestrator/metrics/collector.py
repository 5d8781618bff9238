"""
The metrics that are state: read at scrape time from the registry's snapshots
(L{orchestrator.status.AgentStatus}) and from the counters the other parts keep
(Swarm calls, hold counts, event consumers, event-stream subscribers), never copied
beforehand, so a scrape always sees what is true now.

Every per-agent family is labelled by the configured agent's name only (never a host,
a path or a client), so its cardinality is that of the configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.states import AgentState
from orchestrator.status import AgentStatus
from orchestrator.swarm.values import SWARM_CALLS


@attrs.frozen
class AgentGauge:
    """
    One per-agent gauge: its name, help, and how to read it from the registry, an
    agent and its snapshot (C{None}: no sample for that agent).
    """

    name: str
    documentation: str
    read: Callable[[Any, Any, AgentStatus], float | None]


#: The per-agent gauges: each a line (leases and registered routes were one each).
AGENT_GAUGES: tuple[AgentGauge, ...] = (
    AgentGauge("orchestrator_agent_requests_in_flight",
               "Requests being relayed to the agent now.",
               lambda agents, agent, status: status.in_flight),
    AgentGauge("orchestrator_agent_websockets_open",
               "WebSockets relayed to the agent now (handshakes included).",
               lambda agents, agent, status: status.connections),
    AgentGauge("orchestrator_agent_backend_idle_connections",
               "Idle keep-alive connections to the agent's backend in its pool.",
               lambda agents, agent, status: agent.pool.idle_count()),
    AgentGauge("orchestrator_agent_leases",
               "Busy leases keeping the agent awake now.",
               lambda agents, agent, status: len(status.leases)),
    AgentGauge("orchestrator_agent_registered_routes",
               "Hosts the agent registered at run time (the agents' API).",
               lambda agents, agent, status: len(agents.registered(status.name))),
    AgentGauge("orchestrator_agent_last_activity_timestamp_seconds",
               "When the agent last had traffic (Unix time).",
               lambda agents, agent, status: status.last_activity),
    AgentGauge("orchestrator_agent_state_since_timestamp_seconds",
               "When the agent entered its current state (Unix time).",
               lambda agents, agent, status: status.since),
    AgentGauge("orchestrator_agent_sleeps_at_timestamp_seconds",
               "When idleness will put the agent to sleep if nothing happens (Unix time); "
               "absent when it will not.",
               lambda agents, agent, status: status.sleeps_at),
)


class StateCollector(Collector):
    """
    A prometheus_client collector over the orchestrator's state.

    @param agents: the agents by name (the registry).
    @param swarm: an L{orchestrator.swarm.values.ISwarm}, for its call counts.
    @param holds: the proxy's L{orchestrator.proxy.holding.HoldCounter}, or C{None}.
    @param consumers: the event consumers (with C{kind}, C{delivered}, C{failed},
        C{dropped}, C{queued}), in configuration order.
    @param subscribers: the admin's event stream (C{subscribers}, C{dropped}), or C{None}.
    """

    def __init__(self, agents: Mapping[str, Any], *, swarm=None, holds=None,
                 consumers: Iterable[Any] = (), subscribers=None) -> None:
        self._agents = agents
        self._swarm = swarm
        self.holds = holds
        self._consumers = tuple(consumers)
        self.subscribers = subscribers

    def describe(self) -> list[Metric]:
        # Describing without collecting keeps registration from reading the state.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._agent_metrics()
        yield from self._hold_metrics()
        yield from self._swarm_metrics()
        yield from self._consumer_metrics()
        yield from self._subscriber_metrics()

    def _agent_metrics(self) -> Iterator[Metric]:
        snapshots = [(agent, agent.status()) for agent in list(self._agents.values())]
        state = GaugeMetricFamily(
            "orchestrator_agent_state",
            "1 for the state the agent is in, 0 for the others.",
            labels=("agent", "state"))
        info = GaugeMetricFamily(
            "orchestrator_agent_info", "Always 1: the agent's policy as a label.",
            labels=("agent", "policy"))
        gauges = [(gauge, GaugeMetricFamily(gauge.name, gauge.documentation,
                                            labels=("agent",)))
                  for gauge in AGENT_GAUGES]
        for agent, status in snapshots:
            for each in AgentState:
                state.add_metric((status.name, each.value), 1.0 if status.state is each else 0.0)
            info.add_metric((status.name, agent.config.policy.value), 1.0)
            for gauge, family in gauges:
                value = gauge.read(self._agents, agent, status)
                if value is not None:
                    family.add_metric((status.name,), float(value))
        yield state
        yield info
        for _, family in gauges:
            yield family

    def _hold_metrics(self) -> Iterator[Metric]:
        if self.holds is None:
            return
        held = GaugeMetricFamily("orchestrator_held_requests",
                                 "Requests held while their agent wakes.", labels=("agent",))
        for name in list(self._agents):
            held.add_metric((name,), float(self.holds.per_agent.get(name, 0)))
        yield held
        yield CounterMetricFamily(
            "orchestrator_hold_overflows",
            "Requests that could have been held but found no room (they got the 503).",
            value=float(self.holds.overflow))

    def _swarm_metrics(self) -> Iterator[Metric]:
        counts = getattr(self._swarm, "counts", None)
        if counts is None:
            return
        calls = CounterMetricFamily("orchestrator_swarm_calls",
                                    "Calls made to the Docker engine's Swarm API.",
                                    labels=("call",))
        errors = CounterMetricFamily("orchestrator_swarm_call_errors",
                                     "Calls to the Docker engine's Swarm API that failed.",
                                     labels=("call",))
        for call in SWARM_CALLS:
            calls.add_metric((call,), float(counts.calls.get(call, 0)))
            errors.add_metric((call,), float(counts.errors.get(call, 0)))
        yield calls
        yield errors

    def _consumer_metrics(self) -> Iterator[Metric]:
        if not self._consumers:
            return
        labels = ("consumer",)
        families = {
            "delivered": CounterMetricFamily(
                "orchestrator_event_consumer_delivered_events",
                "Events an event consumer's receiver accepted.", labels=labels),
            "failed": CounterMetricFamily(
                "orchestrator_event_consumer_failed_events",
                "Events an event consumer gave up sending.", labels=labels),
            "dropped": CounterMetricFamily(
                "orchestrator_event_consumer_dropped_events",
                "Events dropped from an event consumer's full queue.", labels=labels),
        }
        queued = GaugeMetricFamily("orchestrator_event_consumer_queued_events",
                                   "Events waiting in an event consumer's queue.",
                                   labels=labels)
        for index, consumer in enumerate(self._consumers):
            label = (consumer_label(index, consumer),)
            for attribute, family in families.items():
                family.add_metric(label, float(getattr(consumer, attribute)))
            queued.add_metric(label, float(consumer.queued))
        yield from families.values()
        yield queued

    def _subscriber_metrics(self) -> Iterator[Metric]:
        stream = self.subscribers
        if stream is None:
            return
        yield GaugeMetricFamily("orchestrator_admin_event_subscribers",
                                "Clients following the admin's event stream now.",
                                value=float(stream.subscriber_count))
        yield CounterMetricFamily(
            "orchestrator_admin_event_subscribers_dropped",
            "Event-stream clients dropped for reading too slowly.",
            value=float(stream.dropped))


def consumer_label(index: int, consumer) -> str:
    """
    A consumer's label: its kind and its place in C{events.consumers} (C{webhook-0}),
    never its URL, which may be a secret and names a host.
    """
    return f"{consumer.kind}-{index}"
