"""
Every event type this program emits, with what it means (docs/events.md has the fields
of each). Consumers choose among them with patterns.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    "agent.lease_acquired": "an agent took a busy lease: it stays awake without traffic",
    "agent.lease_renewed": "an agent extended a busy lease",
    "agent.lease_released": "a busy lease ended before its time (released, or the agent slept)",
    "agent.lease_expired": "a busy lease ran out",
    "route.registered": "an agent registered a host at run time (the agents' API)",
    "route.removed": "a registered host stopped routing (removed, its agent slept, ...)",
    "route.refused": "the agents' API refused a registration or a lease, and why",
    "restart.exhausted": "Swarm gave up restarting an agent's service (max_attempts)",
    "swarm.disconnected": "the Docker engine's event stream was lost",
    "swarm.reconnected": "the Docker engine's event stream is back",
    "config.reloaded": "the configuration file was read again and applied (SIGHUP)",
    "config.reload_failed": "the configuration file was read again and refused",
}
