"""
What the admin API shows of an agent, as JSON-ready values built from its snapshot
(L{orchestrator.status.AgentStatus}) and its configuration: its state, why it is awake,
when it will sleep, and how its recent wakes went.

Leases and registered routes are one field each of L{agent_view} (and a lease one
reason in L{awake_view}).
"""

from __future__ import annotations

from typing import Any

from orchestrator.config.model import Policy
from orchestrator.states import AgentState
from orchestrator.status import AgentStatus, Lease, WakeRecord


def wake_view(record: WakeRecord) -> dict[str, Any]:
    return {"started": record.started, "seconds": record.seconds,
            "phases": dict(record.phases), "succeeded": record.succeeded}


def lease_view(lease: Lease, now: float) -> dict[str, Any]:
    return {"id": lease.id, "reason": lease.reason, "acquired": lease.acquired,
            "expires": lease.expires, "remaining": round(max(lease.expires - now, 0.0), 3)}


def route_view(route) -> dict[str, Any]:
    """
    A route the agent registered at run time.
    """
    return {"host": route.host, "backend": route.target.url,
            "registered_at": route.registered_at}


def recent_frames(connections, since: float) -> int:
    """
    How many of an agent's relayed sockets had a data frame at C{since} or later
    (each socket's C{last_frame}, as the relay records it).
    """
    return sum(1 for connection in connections
               if (getattr(connection, "last_frame", None) or 0.0) >= since)


def awake_view(agent, status: AgentStatus) -> dict[str, Any] | None:
    """
    Why an agent is awake: the requests in flight, the sockets that carried frames
    within the idle timeout (open ones that did not do not keep it awake), and its last
    activity; with one sentence per reason. C{None} for an agent that is asleep.
    """
    if status.state is AgentState.SLEEPING:
        return None
    timeout = agent.config.idle.timeout
    idle_for = max(status.time - status.last_activity, 0.0)
    active_sockets = recent_frames(agent.connections, status.time - timeout)
    reasons = []
    if status.leases:
        count, last = len(status.leases), max(lease.expires for lease in status.leases)
        reasons.append(f"{count} busy lease{'s' * (count != 1)} "
                       f"(for {max(last - status.time, 0.0):.0f}s more)")
    if status.in_flight:
        reasons.append(f"{status.in_flight} request{'s' * (status.in_flight != 1)} in flight")
    if active_sockets:
        reasons.append(f"{active_sockets} WebSocket{'s' * (active_sockets != 1)} with "
                       f"frames in the last {timeout:g}s")
    if agent.config.policy is Policy.ALWAYS_ON:
        reasons.append("always-on: Swarm keeps it running")
    elif idle_for < timeout:
        reasons.append(f"last activity {idle_for:.0f}s ago (idle timeout {timeout:g}s)")
    return {
        "in_flight": status.in_flight,
        "websockets": status.connections,
        "websockets_with_recent_frames": active_sockets,
        "leases": len(status.leases),
        "last_activity": status.last_activity,
        "idle_seconds": round(idle_for, 3),
        "reasons": reasons,
    }


def agent_view(agent, status: AgentStatus, *, origin: str, hosts: list[str],
               routes=(), held: int = 0) -> dict[str, Any]:
    """
    One agent as C{GET /api/agents/NAME} shows it (its C{/api/health} body first).
    """
    config = agent.config
    sleeps_in = (None if status.sleeps_at is None
                 else round(max(status.sleeps_at - status.time, 0.0), 3))
    wakes = [wake_view(record) for record in status.recent_wakes]
    return {
        **status.health_body(),
        "service": config.service,
        "policy": config.policy.value,
        "origin": origin,
        "backend": config.backend.url,
        "hosts": hosts,
        "routes": [route_view(route) for route in routes],
        "leases": [lease_view(lease, status.time) for lease in status.leases],
        "since": status.since,
        "last_activity": status.last_activity,
        "in_flight": status.in_flight,
        "connections": status.connections,
        "held": held,
        "idle_timeout": config.idle.timeout,
        "sleeps_at": status.sleeps_at,
        "sleeps_in": sleeps_in,
        "awake": awake_view(agent, status),
        "recent_wakes": wakes,
        "last_wake": wakes[-1] if wakes else None,
        "time": status.time,
    }
