"""
The one set of agents: who they are, where each came from, and the host table that
routes to them. The proxy, the relay, the admin API and the Swarm watcher all read it;
only the registry changes it, and a change (a reload) is checked whole before any of it
takes effect, so a change that cannot be made leaves the old set as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import Enum

import attrs
from twisted.logger import Logger
from zope.interface import Interface, implementer

from orchestrator.agents.routes import RouteTable
from orchestrator.agents.runtime import Agent
from orchestrator.config.diff import ConfigDiff
from orchestrator.config.model import AgentConfig
from orchestrator.flows import log_unless_cancelled
from orchestrator.swarm.values import SwarmEvent
from orchestrator.swarm.watcher import ISwarmListener

log = Logger()


class Origin(Enum):
    """
    Where an agent (or a route) came from.
    """

    #: The configuration file.
    CONFIG = "config"
    #: Registered at run time (through the agents' API).
    REGISTERED = "registered"


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


@implementer(ISwarmListener)
class AgentRegistry(Mapping[str, Agent]):
    """
    The agents by name, and the routes to them.

    @param make_agent: builds the runtime of an agent configuration (not started).
    """

    def __init__(self, make_agent: Callable[[AgentConfig], Agent]) -> None:
        self._make_agent = make_agent
        self._entries: dict[str, Entry] = {}
        self._by_service: dict[str, tuple[Agent, ...]] = {}
        self._routes: RouteTable[Agent] = RouteTable()
        self._observers: list[IRegistryObserver] = []

    # Reading ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Agent:
        return self._entries[name].agent

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def origin(self, name: str) -> Origin:
        return self._entries[name].origin

    def match(self, host: str) -> Agent | None:
        """
        The agent a request's C{Host} routes to (exact names first, then the longest
        wildcard), or C{None}.
        """
        return self._routes.match(host)

    def patterns(self, name: str) -> list[str]:
        """
        The host patterns routed to agent C{name}.
        """
        return self._routes.patterns(name)

    def observe(self, observer: IRegistryObserver) -> None:
        self._observers.append(observer)

    # Changing --------------------------------------------------------------------------

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
        changed ones take up their new settings (keeping their state and connections),
        or are replaced by a new runtime when their service or policy changed. The new
        host table is built whole first; if it cannot be (two agents claim one host),
        nothing changes and L{orchestrator.agents.routes.HostConflict} is raised.

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
                agent = self._make_agent(changed.new)
                entries[name] = Entry(agent, Origin.CONFIG)
                fresh.append(agent)
            else:
                reconfigured.append((entries[name].agent, changed.new))
        for config in change.added:
            agent = self._make_agent(config)
            entries[config.name] = Entry(agent, Origin.CONFIG)
            fresh.append(agent)
        new_configs = {agent.name: config for agent, config in reconfigured}
        routes: RouteTable[Agent] = RouteTable()
        for name, entry in entries.items():
            config = new_configs.get(name, entry.agent.config)
            for host in config.hosts:
                routes.add(host, entry.agent, owner=name)
        # Everything checked: from here on nothing fails.
        self._entries, self._routes = entries, routes
        self._by_service = {}
        for entry in entries.values():
            service = new_configs.get(entry.agent.name, entry.agent.config).service
            self._by_service[service] = (*self._by_service.get(service, ()), entry.agent)
        for agent in retired:
            agent.stop()
            agent.release_waiters()
        for agent, config in reconfigured:
            agent.reconfigure(config)
        for observer in list(self._observers):
            observer.agents_changed(tuple(fresh), tuple(retired))
        return tuple(fresh)

    # Lifecycle -------------------------------------------------------------------------

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

    def everything_changed(self) -> None:
        for entry in list(self._entries.values()):
            entry.agent.service_changed()
