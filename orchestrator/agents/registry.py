"""
The one set of agents: who they are, where each came from, and the host table that
routes to them, with the hosts agents register at run time. The proxy, the relay, the
admin API, the agents' API and the Swarm watcher all read it; only the registry changes
it, and a change (a reload) is checked whole before any of it takes effect, so a change
that cannot be made leaves the old set as it was.

A registered route lives while its agent is awake: it is purged, with an event, when the
agent sleeps (a request for the host then falls to the agent's wildcard, and wakes it),
is removed, or when the configuration comes to route the host itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import Enum

import attrs
from twisted.logger import Logger
from zope.interface import Interface, implementer

from orchestrator.agents.core import FlowBase
from orchestrator.agents.routes import RouteTable, normalize_host
from orchestrator.agents.runtime import Agent
from orchestrator.config.diff import ConfigDiff
from orchestrator.config.model import AgentConfig, Backend
from orchestrator.events.bus import EventBus
from orchestrator.flows import log_unless_cancelled
from orchestrator.policy.registration import Refused, check_host, falls_under
from orchestrator.states import AgentState
from orchestrator.status import CapacityStatus
from orchestrator.swarm.values import SwarmEvent
from orchestrator.swarm.watcher import ISwarmListener

log = Logger()


class Origin(Enum):
    """
    Where an agent or a route came from.
    """

    #: The configuration file.
    CONFIG = "config"
    #: Registered at run time (through the agents' API).
    REGISTERED = "registered"


@attrs.frozen
class Route:
    """
    A host pattern routed to an agent. A configured route goes to the agent's own
    backend (whatever it is after a reload); a registered one to its own C{backend}.
    """

    host: str
    agent: Agent = attrs.field(eq=False)
    origin: Origin
    backend: Backend | None = None
    registered_at: float | None = None

    @property
    def target(self) -> Backend:
        """
        Where the route's traffic goes.
        """
        return self.backend if self.backend is not None else self.agent.config.backend


@attrs.frozen
class Entry:
    agent: Agent
    origin: Origin


class IRegistryObserver(Interface):
    """
    Someone who keeps something per agent (metrics, the admin's views).
    """

    def agents_changed(added: tuple[Agent, ...], removed: tuple[Agent, ...]) -> None:  # type: ignore[misc]
        """
        Agents came and went (C{removed} are stopped already).
        """


class UnknownRoute(Exception):
    def __init__(self, host: str) -> None:
        super().__init__(f"no registered route for {host}")


@implementer(ISwarmListener)
class AgentRegistry(Mapping[str, Agent]):
    """
    The agents by name, and the routes to them.

    @param make_agent: builds the runtime of an agent configuration (not started).
    @param bus: where the routes' events go.
    """

    def __init__(self, make_agent: Callable[[AgentConfig], Agent],
                 bus: EventBus | None = None, capacity=None) -> None:
        """
        @param capacity: the host's budget over these agents
            (L{orchestrator.agents.capacity.Capacity}), if there is one.
        """
        self._make_agent = make_agent
        self._bus = bus
        self._capacity = capacity
        self._entries: dict[str, Entry] = {}
        self._by_service: dict[str, tuple[Agent, ...]] = {}
        self._routes: RouteTable[Route] = RouteTable()
        self._configured_exact: frozenset[str] = frozenset()
        self._registered: dict[str, Route] = {}
        self._observers: list[IRegistryObserver] = []
        self._change_listeners: list[Callable[[], None]] = []
        #: The connections of agents retired by a reload, until they are drained.
        self._retiring: set = set()

    # Reading ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Agent:
        return self._entries[name].agent

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def origin(self, name: str) -> Origin:
        return self._entries[name].origin

    def route(self, host: str) -> Route | None:
        """
        The route a request's C{Host} takes (exact names first, then the longest
        wildcard), or C{None}.
        """
        return self._routes.match(host)

    def match(self, host: str) -> Agent | None:
        """
        The agent a request's C{Host} routes to, or C{None}.
        """
        route = self._routes.match(host)
        return None if route is None else route.agent

    def patterns(self, name: str) -> list[str]:
        """
        The host patterns routed to agent C{name}, configured and registered.
        """
        return self._routes.patterns(name)

    def registered(self, name: str | None = None) -> tuple[Route, ...]:
        """
        The routes registered at run time (by agent C{name} only, if given), by host.
        """
        return tuple(route for host, route in sorted(self._registered.items())
                     if name is None or route.agent.name == name)

    def capacity(self) -> CapacityStatus | None:
        """
        The host's budget, its use and the wakes waiting for room, if there is a budget.
        """
        return None if self._capacity is None else self._capacity.snapshot()

    def observe(self, observer: IRegistryObserver) -> None:
        self._observers.append(observer)

    def on_change(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener} whenever a registered route or a lease changes (to keep them).
        """
        self._change_listeners.append(listener)

    # Changing the agents ---------------------------------------------------------------

    def load(self, configs: Iterable[AgentConfig]) -> tuple[Agent, ...]:
        """
        Take up the agents of the configuration file (the registry must be empty);
        returns them, not yet started.
        """
        if self._entries:
            raise ValueError("the registry is loaded already: apply a diff instead")
        return self.apply(ConfigDiff(added=tuple(configs)))

    def apply(self, change: ConfigDiff) -> tuple[Agent, ...]:
        """
        Make the agents match a changed configuration in one step: agents come and go,
        changed ones take up their new settings (keeping their state, connections and
        registered routes), or are replaced by a new runtime when their service or
        policy changed. The new host table is built whole first; if it cannot be (two
        agents claim one host), nothing changes and
        L{orchestrator.agents.routes.HostConflict} is raised. A registered route whose
        agent is gone or replaced, or whose host the configuration now routes, is
        removed (with an event).

        Returns the new runtimes, which the caller starts (L{start}).
        """
        entries = dict(self._entries)
        retired: list[Agent] = []
        fresh: list[Agent] = []
        reconfigured: list[tuple[Agent, AgentConfig]] = []
        for name in change.removed:
            retired.append(entries.pop(name).agent)
        for changed in change.changed:
            name = changed.new.name
            if changed.needs_new_runtime:
                retired.append(entries[name].agent)
                entries[name] = Entry(self._make_agent(changed.new), Origin.CONFIG)
                fresh.append(entries[name].agent)
            else:
                reconfigured.append((entries[name].agent, changed.new))
        for config in change.added:
            entries[config.name] = Entry(self._make_agent(config), Origin.CONFIG)
            fresh.append(entries[config.name].agent)
        configs = {name: entry.agent.config for name, entry in entries.items()}
        configs.update((agent.name, config) for agent, config in reconfigured)
        routes: RouteTable[Route] = RouteTable()
        for name, config in configs.items():
            for host in config.hosts:
                routes.add(host, Route(host, entries[name].agent, Origin.CONFIG), owner=name)
        configured_exact = frozenset(host for config in configs.values()
                                     for host in config.hosts if not host.startswith("*."))
        kept, dropped = self._surviving_routes(entries, configs, routes, configured_exact)
        # Everything checked: from here on nothing fails.
        for route in kept:
            routes.add(route.host, route, owner=route.agent.name)
        self._entries, self._routes, self._configured_exact = entries, routes, configured_exact
        self._registered = {route.host: route for route in kept}
        self._by_service = {}
        for name, entry in entries.items():
            service = configs[name].service
            self._by_service[service] = (*self._by_service.get(service, ()), entry.agent)
        for agent in fresh:
            agent.observe(_RouteExpiry(self, agent))
        for agent in retired:
            self._retire(agent)
        for agent, config in reconfigured:
            agent.reconfigure(config)
        for route, reason in dropped:
            self._removed(route, reason)
        if dropped:
            self._changed()
        for observer in list(self._observers):
            observer.agents_changed(tuple(fresh), tuple(retired))
        return tuple(fresh)

    def _surviving_routes(self, entries, configs, routes, configured_exact):
        kept: list[Route] = []
        dropped: list[tuple[Route, str]] = []
        for route in self._registered.values():
            name = route.agent.name
            entry = entries.get(name)
            if entry is None or entry.agent is not route.agent:
                dropped.append((route, "the agent was removed or replaced"))
                continue
            owner = routes.match(route.host)
            if route.host in configured_exact or owner is None or owner.agent is not route.agent \
                    or not any(falls_under(route.host, p) for p in configs[name].hosts):
                dropped.append((route, "the configuration routes this host now"))
                continue
            kept.append(route)
        return kept, dropped

    # Registered routes -----------------------------------------------------------------

    def register(self, name: str, host: str, backend: Backend, now: float) -> Route:
        """
        Route C{host} (a valid registered host) to agent C{name}'s C{backend}; registering
        a host the agent holds already replaces its backend.

        @raise orchestrator.policy.registration.Refused: if the agent may not.
        """
        agent = self[name]
        if agent.state is AgentState.SLEEPING:
            raise Refused(409, f"agent {name} is asleep")
        current = self._routes.match(host)
        held = tuple(route.host for route in self.registered(name))
        check_host(agent.config, host, served_by=None if current is None else current.agent.name,
                   configured=host in self._configured_exact, held=held)
        route = Route(host, agent, Origin.REGISTERED, backend, registered_at=now)
        self._routes.add(host, route, owner=name)
        replaced = self._registered.get(host)
        self._registered[host] = route
        self._emit("route.registered", name, host=host, backend=backend.url,
                   replaced=replaced is not None)
        self._changed()
        return route

    def unregister(self, name: str, host: str) -> Route:
        """
        Remove a route agent C{name} registered.

        @raise UnknownRoute: if no route is registered for C{host}.
        @raise orchestrator.policy.registration.Refused: (403) if it is another agent's.
        """
        route = self._registered.get(normalize_host(host))
        if route is None:
            raise UnknownRoute(host)
        if route.agent.name != name:
            raise Refused(403, f"the route for {route.host} is not agent {name}'s")
        self._drop(route, "removed by the agent")
        return route

    def restore(self, name: str, routes: Iterable[tuple[str, Backend, float]]) -> None:
        """
        Take up routes kept across a restart for agent C{name} (awake again); those that
        may not be registered any more are dropped, saying why.
        """
        for host, backend, registered_at in routes:
            try:
                route = self.register(name, host, backend, registered_at)
            except Refused as refused:
                log.info("not restoring the route {host} of {agent}: {reason}", host=host,
                         agent=name, reason=refused.reason)
            else:
                log.info("restored the route {host} of {agent}", host=route.host, agent=name)

    def purge(self, agent: Agent, reason: str) -> None:
        """
        Remove every route agent C{agent} registered.
        """
        routes = [route for route in self._registered.values() if route.agent is agent]
        for route in routes:
            self._drop(route, reason, notify=False)
        if routes:
            self._changed()

    def _drop(self, route: Route, reason: str, notify: bool = True) -> None:
        del self._registered[route.host]
        self._routes.remove(route.host)
        self._removed(route, reason)
        if notify:
            self._changed()

    def _removed(self, route: Route, reason: str) -> None:
        self._emit("route.removed", route.agent.name, host=route.host, reason=reason)

    def _emit(self, event_type: str, agent: str, **fields) -> None:
        if self._bus is not None:
            self._bus.emit(event_type, agent, **fields)

    def _changed(self) -> None:
        for listener in list(self._change_listeners):
            listener()

    def _retire(self, agent: Agent) -> None:
        connections = agent.connections
        self._retiring.add(connections)
        agent.retire().addBoth(lambda _: self._retiring.discard(connections))

    # Lifecycle -------------------------------------------------------------------------

    def connections(self) -> list:
        """
        Every agent's relayed connections, and those of agents a reload retired that
        are still open: what a shutdown drains.
        """
        return [entry.agent.connections for entry in self._entries.values()] + [
            registry for registry in self._retiring if len(registry)]

    @staticmethod
    def start(agents: Iterable[Agent]) -> None:
        """
        Reconcile C{agents} with Swarm (each reports its own trouble).
        """
        for agent in agents:
            agent.start().addErrback(log_unless_cancelled, log, "reconciling {agent} failed",
                                     agent=agent.name)

    def stop(self) -> None:
        """
        Stop every agent's timers and flows (never scaling anything).
        """
        for entry in self._entries.values():
            entry.agent.stop()

    def release_waiters(self) -> None:
        """
        Let every long-poll and held request answer now, with the state as it is.
        """
        for entry in self._entries.values():
            entry.agent.release_waiters()

    # ISwarmListener --------------------------------------------------------------------

    def watches(self, service: str) -> bool:
        return service in self._by_service

    def service_changed(self, service: str, events: tuple[SwarmEvent, ...]) -> None:
        # (The configuration may have been reloaded since the events were received.)
        for agent in self._by_service.get(service, ()):
            agent.service_changed(events)

    def nodes_changed(self, events: tuple[SwarmEvent, ...]) -> None:
        # Without the task poll (orchestrator.agents.taskpoll): each awake agent reads
        # its service again, its tasks on that node being on the move.
        for entry in list(self._entries.values()):
            if entry.agent.state is not AgentState.SLEEPING:
                entry.agent.service_changed()

    def everything_changed(self) -> None:
        for entry in list(self._entries.values()):
            entry.agent.service_changed()


class _RouteExpiry(FlowBase):
    """
    Watches one agent for the registry: its routes end when it sleeps; a change of its
    leases is a change to keep.
    """

    def __init__(self, registry: AgentRegistry, agent: Agent) -> None:
        self._registry = registry
        self._agent = agent

    def transitioned(self, old: AgentState, new: AgentState) -> None:
        if new is AgentState.SLEEPING:
            self._registry.purge(self._agent, "the agent slept")

    def settled(self, state: AgentState) -> None:
        self.transitioned(state, state)

    def leases_changed(self) -> None:
        self._registry._changed()
