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
    "restart.exhausted": "Swarm gave up restarting an agent's service (max_attempts)",
    "swarm.disconnected": "the Docker engine's event stream was lost",
    "swarm.reconnected": "the Docker engine's event stream is back",
    "config.reloaded": "the configuration file was read again and applied (SIGHUP)",
    "config.reload_failed": "the configuration file was read again and refused",
}
