"""
Judging a wake in progress: whether Swarm says it can still succeed, and when to look
again.
"""

from __future__ import annotations

from orchestrator.swarm.values import ServiceStatus


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
