"""
Judging what Swarm shows of an agent's service, between our own wakes and sleeps, and
what the agent does about it: pure functions returning frozen actions, which
L{orchestrator.agents.sync} carries out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

import attrs

from orchestrator.config.model import Policy
from orchestrator.states import AgentState
from orchestrator.swarm.values import NodeStatus, ServiceStatus, TaskStatus


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


def task_down_reason(status: ServiceStatus, died: dict[str, int | None],
                     nodes: Mapping[str, NodeStatus] | None = None) -> str:
    """
    Why no task of C{status} runs, in Swarm's words where it has them.
    """
    return (f"no task running ({_last_loss(status, died, nodes or {})})"
            f"{'; Swarm is restarting it' if _restarting(status, died) else ''}")


def _restarting(status: ServiceStatus, died: Mapping[str, int | None]) -> bool:
    return any(task.live and not task.running and task.id not in died
               for task in status.tasks) or (
        not status.running_tasks and any(task.live and task.id not in died
                                         for task in status.tasks))


def _last_loss(status: ServiceStatus, died: Mapping[str, int | None],
               nodes: Mapping[str, NodeStatus]) -> str:
    """
    What last took a task away: the engine's word on a death Swarm has not recorded yet,
    else the node a task left (drained, down), else Swarm's error for the newest task
    that ended.
    """
    if died:
        task_id, exit_code = list(died.items())[-1]
        return f"task {task_id[:12]} exited with code {exit_code}"
    # Newest first: tasks Swarm no longer means to run (a node that is down keeps
    # showing its tasks as they were, their desired state shut down).
    for task in reversed(status.tasks):
        if task.desired_state == "running":
            continue
        node = nodes.get(task.node_id)
        if node is not None and node.gone:
            return f"task {task.id[:12]} left {node.describe()}"
    ended = [task for task in status.tasks if not task.live]
    if ended:
        return ended[-1].error or f"task {ended[-1].state}"
    unplaced = [task for task in status.tasks if task.live and task.error]
    return unplaced[-1].error if unplaced else "no task scheduled"


def _unplaced(task: TaskStatus) -> bool:
    """
    Whether Swarm means to run C{task} but has no node for it (its error says why).
    """
    return task.live and not task.running and bool(task.error)


@attrs.frozen
class Shortage:
    """
    Fewer of an agent's replicas run than it asks for, and not only because they are
    still starting.
    """

    running: int
    wanted: int
    reason: str


def replicas_short(status: ServiceStatus, wanted: int, lagging: Mapping[str, int | None],
                   lost: Iterable[str] = (),
                   nodes: Mapping[str, NodeStatus] | None = None) -> Shortage | None:
    """
    Whether an awake agent that asks for C{wanted} replicas is short of them.

    A replica counts as missing once a task was lost (C{lost}: tasks seen running that
    no longer run, or that the engine said died), or when Swarm can place none for it
    (no suitable node); tasks that are only starting (after a wake) are not missing.

    @param lagging: tasks the engine said died (id -> exit code) that Swarm still shows
        live.
    """
    if status.replicas == 0:
        return None
    running = [task for task in status.running_tasks if task.id not in lagging]
    if len(running) >= wanted:
        return None
    current = frozenset(task.id for task in running)
    gone = (frozenset(lost) - current) | frozenset(lagging)
    if not gone and not any(_unplaced(task) for task in status.tasks):
        return None
    why = _last_loss(status, dict(lagging), nodes or {})
    restarting = "; Swarm is replacing it" if _restarting(status, lagging) else ""
    return Shortage(len(running), wanted,
                    f"{len(running)} of {wanted} replicas running ({why}){restarting}")


# What to do about it ---------------------------------------------------------------------


@attrs.frozen
class Stay:
    """
    Nothing to do: what Swarm shows is what the agent's state already says.
    """


@attrs.frozen
class Recover:
    """
    A task runs again (or, for an always-on agent, at last): probe it until it answers.
    """


@attrs.frozen
class SleptElsewhere:
    """
    Someone else scaled an on-demand agent to 0: it sleeps.
    """


@attrs.frozen
class Degrade:
    """
    No task runs (or Swarm refuses to run one): the agent is degraded for C{reason}.
    """

    reason: str
    #: Swarm has given up restarting it (the restart policy's C{max_attempts}).
    restarts_exhausted: bool = False
    #: Tasks run, fewer than the agent asks for (L{replicas_short}).
    short: bool = False


SwarmReaction = Stay | Recover | SleptElsewhere | Degrade


def react(*, status: ServiceStatus, lagging: dict[str, int | None], policy: Policy,
          state: AgentState, degraded_by_swarm: bool, wanted: int = 1,
          lost: Iterable[str] = (),
          nodes: Mapping[str, NodeStatus] | None = None) -> SwarmReaction:
    """
    What an agent does about its service's C{status}, read between our own wakes and
    sleeps.

    @param lagging: tasks the engine said died (id -> exit code) that Swarm still shows
        live.
    @param degraded_by_swarm: the agent is degraded because of what Swarm showed (so
        Swarm's news may end it), not because a wake or its probes failed.
    @param wanted: the replicas the agent asks for when awake.
    @param lost: tasks seen running while it was awake (L{replicas_short}).
    @param nodes: the swarm's nodes, to say which one a task left.
    """
    always_on = policy is Policy.ALWAYS_ON
    verdict = judge_service(status, lagging)
    if verdict is SwarmVerdict.TASK_RUNS:
        awake = state is AgentState.READY or (state is AgentState.DEGRADED
                                              and degraded_by_swarm)
        shortage = replicas_short(status, wanted, lagging, lost, nodes)
        if shortage is not None and awake:
            # Still serving on the replicas that run, but short of what it asks for.
            return Degrade(shortage.reason, short=True)
        if (state is AgentState.DEGRADED and degraded_by_swarm) or (
                state is AgentState.STARTING and always_on):
            return Recover()
        return Stay()
    if verdict is SwarmVerdict.SCALED_TO_ZERO:
        if always_on:
            return Degrade(f"service {status.name} is scaled to 0: Swarm starts always-on "
                           "agents, the orchestrator never does")
        if state is AgentState.READY or (state is AgentState.DEGRADED and degraded_by_swarm):
            return SleptElsewhere()
        return Stay()
    awake = state is AgentState.READY or (
        state is AgentState.DEGRADED and (always_on or degraded_by_swarm))
    # An always-on agent still starting whose first task is only on its way stays starting.
    first_task_died = state is AgentState.STARTING and always_on and task_died(status, lagging)
    if awake or first_task_died:
        return Degrade(task_down_reason(status, lagging, nodes),
                       restarts_exhausted=verdict is SwarmVerdict.RESTARTS_EXHAUSTED)
    return Stay()
