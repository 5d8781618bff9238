"""
What a reload changes: a pure comparison of the running configuration with the new one.
"""

from __future__ import annotations

import attrs

from orchestrator.config.model import AgentConfig, Config

#: Sections read once at start: a change takes effect at the next restart.
RESTART_SECTIONS = ("listen", "docker", "events")


@attrs.frozen
class AgentChange:
    """
    One agent whose configuration changed.
    """

    old: AgentConfig
    new: AgentConfig

    @property
    def replace(self) -> bool:
        """
        Whether the agent needs a new runtime: it is another Swarm service, or another
        policy owns it. Otherwise the running one takes up the new settings, keeping its
        state, activity and connections.
        """
        return (self.old.service, self.old.policy) != (self.new.service, self.new.policy)


@attrs.frozen
class ConfigDiff:
    """
    From one configuration to the next.
    """

    #: Agents new in the configuration.
    added: tuple[AgentConfig, ...] = ()
    #: Names of the agents gone from it.
    removed: tuple[str, ...] = ()
    changed: tuple[AgentChange, ...] = ()
    #: Sections that changed and take effect only at the next restart.
    restart_needed: tuple[str, ...] = ()

    @property
    def agents_changed(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff(old: Config, new: Config) -> ConfigDiff:
    """
    What changes from C{old} to C{new}, agents sorted by name.
    """
    before = {agent.name: agent for agent in old.agents}
    after = {agent.name: agent for agent in new.agents}
    return ConfigDiff(
        added=tuple(after[name] for name in sorted(set(after) - set(before))),
        removed=tuple(sorted(set(before) - set(after))),
        changed=tuple(AgentChange(before[name], after[name])
                      for name in sorted(set(before) & set(after))
                      if before[name] != after[name]),
        restart_needed=tuple(section for section in RESTART_SECTIONS
                             if getattr(old, section) != getattr(new, section)),
    )
