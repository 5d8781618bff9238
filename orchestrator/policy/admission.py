"""
What the proxy does with one request for an agent: forward it, wake the agent, or answer
with its state. Pure functions of (now, observed state, config).
"""

from __future__ import annotations

from enum import Enum

from orchestrator.config.model import Policy
from orchestrator.states import AgentState


class Admission(Enum):
    """
    What the proxy does with one request for an agent.
    """

    #: Send it to the backend.
    FORWARD = "forward"
    #: Start a wake and answer 503 C{starting}.
    WAKE = "wake"
    #: Answer 503 with the agent's current state; start nothing.
    REJECT = "reject"


def admit(
    *,
    policy: Policy,
    state: AgentState,
    backend_running: bool,
    ignored: bool,
    now: float,
    wake_allowed_at: float,
) -> Admission:
    """
    Decide what to do with a request.

    @param backend_running: whether a task is believed to run (it was ready and has not
        been scaled down since). A degraded agent with a running backend still gets
        traffic: the backend may answer, and if it does not the client hears the truth.
    @param ignored: the request matches C{idle.ignore_paths}/C{ignore_user_agents}: an
        uptime monitor, which must never wake an agent.
    @param wake_allowed_at: when a degraded agent may be woken again (after a failed wake).
    """
    if state is AgentState.READY:
        return Admission.FORWARD
    if state is AgentState.DEGRADED and backend_running:
        return Admission.FORWARD
    if ignored or policy is Policy.ALWAYS_ON:
        return Admission.REJECT
    if state is AgentState.SLEEPING:
        return Admission.WAKE
    if state is AgentState.DEGRADED and now >= wake_allowed_at:
        return Admission.WAKE
    return Admission.REJECT


def path_is_ignored(path: str, ignore_paths: tuple[str, ...]) -> bool:
    """
    Whether C{path} (without query) matches an entry: exact, or a prefix ending in C{*}.
    """
    for pattern in ignore_paths:
        if pattern.endswith("*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern:
            return True
    return False


def user_agent_is_ignored(user_agent: str, ignore_user_agents: tuple[str, ...]) -> bool:
    """
    Whether C{user_agent} contains one of the entries, ignoring case.
    """
    lowered = user_agent.lower()
    return any(entry.lower() in lowered for entry in ignore_user_agents)
