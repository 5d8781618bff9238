"""
Judging what Swarm shows of an agent's service, between our own wakes and sleeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from orchestrator.swarm.values import ServiceStatus


class SwarmVerdict(Enum):
    """
    What a service's status says about its agent, read between our own wakes and sleeps.
    """

    #: A task runs (and the engine has not said it died).
    TASK_RUNS = "task_runs"
    #: Replicas are wanted, none runs; Swarm may be restarting one.
    TASK_DOWN = "task_down"
    #: Replicas are wanted, none runs, and Swarm has given up restarting.
    RESTARTS_EXHAUSTED = "restarts_exhausted"
    #: The service wants no replica.
    SCALED_TO_ZERO = "scaled_to_zero"


def judge_service(status: ServiceStatus, dead_tasks: Iterable[str]) -> SwarmVerdict:
    """
    Judge C{status}; C{dead_tasks} are tasks the engine said died, which Swarm may still
    show running for a moment.
    """
    if status.replicas == 0:
        return SwarmVerdict.SCALED_TO_ZERO
    dead = frozenset(dead_tasks)
    if any(task.id not in dead for task in status.running_tasks):
        return SwarmVerdict.TASK_RUNS
    if status.restarts_exhausted:
        return SwarmVerdict.RESTARTS_EXHAUSTED
    return SwarmVerdict.TASK_DOWN


def task_died(status: ServiceStatus, died: dict[str, int | None]) -> bool:
    """
    Whether the engine said a task died, or the newest task that ended failed.
    """
    ended = [task for task in status.tasks if not task.live]
    return bool(died) or bool(ended and ended[-1].failed)


def task_down_reason(status: ServiceStatus, died: dict[str, int | None]) -> str:
    """
    Why no task of C{status} runs, in Swarm's words where it has them.
    """
    if died:
        # Swarm has not recorded the death yet: the engine's word is the latest.
        task_id, exit_code = list(died.items())[-1]
        last = f"task {task_id[:12]} exited with code {exit_code}"
    else:
        ended = [task for task in status.tasks if not task.live]
        last = (ended[-1].error or f"task {ended[-1].state}") if ended else "no task scheduled"
    restarting = any(task.live and task.id not in died for task in status.tasks)
    return f"no task running ({last}){'; Swarm is restarting it' if restarting else ''}"
