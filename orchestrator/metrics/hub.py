"""
The orchestrator's metrics, together: one C{CollectorRegistry} with the state
collector, the event counters and the traffic meter, kept in step with the agents.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics
from zope.interface import implementer

from orchestrator.agents.registry import AgentRegistry, IRegistryObserver
from orchestrator.events.bus import EventBus
from orchestrator.metrics.collector import StateCollector
from orchestrator.metrics.counting import EventMetrics, TrafficMetrics


@implementer(IRegistryObserver)
class Metrics:
    """
    Everything C{/metrics} shows.

    @ivar registry: the C{CollectorRegistry} to expose.
    @ivar traffic: the HTTP path's L{orchestrator.meters.ITrafficMeter}.
    @ivar collector: the state collector; C{holds} and C{subscribers} are set once the
        proxy and the admin are built.
    """

    def __init__(self, agents: AgentRegistry, bus: EventBus, *, swarm=None,
                 consumers: Iterable[object] = ()) -> None:
        # No *_created series: they double every counter's series (300 agents make that
        # thousands) and read the wall clock rather than the injected one. (A setting of
        # prometheus_client for the whole process, which is this program's own.)
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = StateCollector(agents, swarm=swarm, consumers=consumers)
        self.registry.register(self.collector)
        self.events = EventMetrics(self.registry)
        self.traffic = TrafficMetrics(self.registry)
        self._agents = agents
        bus.subscribe(self.events)
        agents.observe(self)

    def agents_changed(self, added, removed) -> None:
        # (A runtime replaced under the same name keeps its series.)
        for agent in removed:
            if agent.name in self._agents:
                continue
            self.events.forget(agent.name)
            self.traffic.forget(agent.name)
