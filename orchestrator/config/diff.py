"""
What a reload (SIGHUP) changes: L{diff} of the running configuration and the new one, a
pure value that the service applies.

The agents' part is applied in one step by
L{orchestrator.agents.registry.AgentRegistry.apply}: removed agents are stopped (their
held requests released); a change that C{needs_new_runtime} (its Swarm service or its
policy changed) replaces the runtime, any other is made in place, keeping the agent's
state; added agents get a runtime; and the host table is built anew from the result,
so a host may move from one agent to another within one reload. Then the service
gives the proxy C{new.proxy} and the admin API C{new.admin.token}, and leaves the
sections in C{restart_needed} (C{listen}, C{docker}, C{events}, C{agent_api}) as they run, saying so:
the configuration in effect is L{running_config}. The C{shutdown} section needs nothing
done: it is read when the service stops.

The C{config.reloaded} event carries today's report of it as lists of names: C{added}
(L{ConfigDiff.added_names}), C{removed}, C{changed} (L{ConfigDiff.changed_names}) and
C{restart_needed}, each in the order this diff gives them.
"""

from __future__ import annotations

import attrs

from orchestrator.config.model import AgentConfig, Config

#: The sections that only take effect at the next start: the listeners, the Docker
#: engine's client and the event consumers are built once, when the service starts.
RESTART_SECTIONS = ("listen", "docker", "events", "agent_api")


def _same_agent(instance: AgentChange, attribute: attrs.Attribute, new: AgentConfig) -> None:
    if new.name != instance.old.name:
        raise ValueError(f"AgentChange.new: agent {new.name!r} is not {instance.old.name!r}")


@attrs.frozen
class AgentChange:
    """
    An agent whose configuration changed, before and after.
    """

    old: AgentConfig
    new: AgentConfig = attrs.field(validator=_same_agent)

    @property
    def name(self) -> str:
        return self.new.name

    @property
    def needs_new_runtime(self) -> bool:
        """
        Whether the agent needs a new runtime: its Swarm service or its policy changed,
        which an agent's state (counted replicas, timers) does not survive. Any other
        change is made in place (L{Agent.reconfigure}), keeping the state.
        """
        return (self.old.service, self.old.policy) != (self.new.service, self.new.policy)


@attrs.frozen
class ConfigDiff:
    """
    What changed from one configuration to the next; agents are by name, in name order.
    """

    #: The agents that are new, as configured.
    added: tuple[AgentConfig, ...] = ()
    #: The names of the agents that are gone.
    removed: tuple[str, ...] = ()
    #: The agents kept under their name whose configuration changed.
    changed: tuple[AgentChange, ...] = ()
    #: The sections that changed but only take effect at the next start, in the order
    #: of L{RESTART_SECTIONS}.
    restart_needed: tuple[str, ...] = ()
    #: Whether the C{proxy} section changed (limits and timeouts, applied to new requests).
    proxy_changed: bool = False
    #: Whether the admin API's token changed (set, replaced or removed).
    admin_token_changed: bool = False
    #: Whether the C{shutdown} section changed (nothing to do: it is read at stop).
    shutdown_changed: bool = False

    @property
    def added_names(self) -> tuple[str, ...]:
        return tuple(agent.name for agent in self.added)

    @property
    def changed_names(self) -> tuple[str, ...]:
        return tuple(change.name for change in self.changed)

    @property
    def empty(self) -> bool:
        """
        Whether nothing changed (but the file the configuration came from, maybe).
        """
        return self == ConfigDiff()


def diff(old: Config, new: Config) -> ConfigDiff:
    """
    What changes when C{new} replaces C{old}, the running configuration.
    """
    old_agents = {agent.name: agent for agent in old.agents}
    new_agents = {agent.name: agent for agent in new.agents}
    return ConfigDiff(
        added=tuple(new_agents[name] for name in sorted(new_agents.keys() - old_agents.keys())),
        removed=tuple(sorted(old_agents.keys() - new_agents.keys())),
        changed=tuple(AgentChange(old_agents[name], new_agents[name])
                      for name in sorted(old_agents.keys() & new_agents.keys())
                      if old_agents[name] != new_agents[name]),
        restart_needed=tuple(section for section in RESTART_SECTIONS
                             if getattr(old, section) != getattr(new, section)),
        proxy_changed=old.proxy != new.proxy,
        admin_token_changed=old.admin.token != new.admin.token,
        shutdown_changed=old.shutdown != new.shutdown,
    )


def running_config(old: Config, new: Config) -> Config:
    """
    The configuration in effect once C{new} is applied over C{old}: C{new}, but with the
    sections that wait for a restart (L{RESTART_SECTIONS}) as C{old} has them.
    """
    return attrs.evolve(new, **{section: getattr(old, section) for section in RESTART_SECTIONS})
