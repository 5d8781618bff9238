"""
When an on-demand agent has been idle long enough to sleep.
"""

from __future__ import annotations

from orchestrator.config.model import Policy
from orchestrator.states import AgentState


def idle_deadline(*, last_activity: float, in_flight: int, timeout: float, now: float,
                  leased_until: float | None = None) -> float | None:
    """
    Return when to look again, or C{None} if the agent has been idle long enough to sleep.

    A request in flight is activity: an agent streaming a long answer stays awake. A
    lease keeps it awake until the lease ends, and no longer: once the last lease is
    over, an agent idle for longer than the timeout sleeps at once.
    """
    if in_flight > 0:
        return now + timeout
    deadline = max(last_activity + timeout, leased_until or 0.0)
    return None if now >= deadline else deadline


def sleeps_when_idle(*, policy: Policy, state: AgentState, backend_running: bool) -> bool:
    """
    Whether idleness puts an agent to sleep: an on-demand agent that holds a replica,
    ready or not. A degraded one whose task still runs (its probes fail, or Swarm is
    restarting it) sleeps too: a hung agent must not keep its memory forever.
    """
    if policy is not Policy.ON_DEMAND:
        return False
    return state is AgentState.READY or (state is AgentState.DEGRADED and backend_running)
