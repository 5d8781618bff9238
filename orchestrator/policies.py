"""
The decisions of the on-demand and always-on policies, as pure functions of
(now, observed state, config). L{orchestrator.agent.Agent} carries them out.
"""

from __future__ import annotations

from enum import Enum

from orchestrator.config import Policy
from orchestrator.states import AgentState
from orchestrator.swarm import ServiceStatus


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


def idle_deadline(*, last_activity: float, in_flight: int, timeout: float, now: float) -> float | None:
    """
    Return when to look again, or C{None} if the agent has been idle long enough to sleep.

    A request in flight is activity: an agent streaming a long answer stays awake.
    """
    if in_flight > 0:
        return now + timeout
    deadline = last_activity + timeout
    return None if now >= deadline else deadline


class WakeFailed(Exception):
    """
    A wake cannot succeed; the message says why (shown in the health body).
    """


def wake_progress(status: ServiceStatus, earlier_tasks: frozenset[str]) -> bool:
    """
    Judge a service's status during a wake: C{True} if a task runs (time to probe it),
    C{False} if not yet.

    @param earlier_tasks: ids of tasks that existed before the wake; only a new task's
        failure says this wake failed (old failed tasks are history).
    @raise WakeFailed: if Swarm already says the wake cannot succeed (image missing,
        task rejected or exited).
    """
    for task in status.tasks:
        if task.id not in earlier_tasks and task.failed:
            detail = task.error or f"task {task.state}"
            raise WakeFailed(f"Swarm could not start a task of {status.name}: {detail}")
    if status.replicas == 0:
        raise WakeFailed(f"service {status.name} was scaled to 0 during the wake")
    return bool(status.running_tasks)


def next_probe_delay(elapsed: float) -> float:
    """
    Seconds until the next look at a starting agent, C{elapsed} seconds into its wake:
    every 50 ms for the first 5 s (a quick start is noticed within 50 ms, which is what
    a waiting client feels), then 250 ms, and once a second after 15 s.
    """
    if elapsed < 5:
        return 0.05
    if elapsed < 15:
        return 0.25
    return 1.0


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
