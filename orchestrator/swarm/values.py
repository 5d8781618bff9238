"""
What Swarm tells us, as values: services, tasks and events, the errors of the Swarm
service manager, and its interface (L{ISwarm}). No Docker SDK here: the policies and the
fake import this module, L{orchestrator.swarm.docker} alone imports C{docker}.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import attrs
from twisted.application.service import IService
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

#: Task states in which a task will never run (Swarm's own names).
FAILED_TASK_STATES = frozenset({"failed", "rejected", "orphaned"})


#: Task states after which a task does nothing any more, failed or not.
ENDED_TASK_STATES = FAILED_TASK_STATES | {"complete", "shutdown", "remove"}


#: Desired states of a task Swarm still means to run (C{ready}: a restart waiting out its
#: restart delay).
LIVE_DESIRED_STATES = frozenset({"running", "ready"})


class SwarmError(Exception):
    """
    Docker refused or failed a request; the message says what and why.
    """


class SwarmUnavailable(SwarmError):
    """
    The Docker engine cannot be reached, or it is not a Swarm manager.
    """


class UnknownService(SwarmError):
    """
    There is no Swarm service by that name.
    """

    def __init__(self, service: str) -> None:
        super().__init__(f"no Swarm service named {service!r}")
        self.service = service


@attrs.frozen
class TaskStatus:
    """
    One task (one container slot) of a service, as Swarm last reported it.
    """

    id: str
    #: Swarm's task state: C{pending}, C{preparing}, C{starting}, C{running}, C{failed}, ...
    state: str
    #: What Swarm wants: C{running}; C{shutdown} for a task that ended or was replaced;
    #: C{remove} for a task stopped by scaling down (Docker 20.10+); C{ready} for a
    #: replacement task waiting to start.
    desired_state: str
    #: Swarm's error for a task that failed or was rejected (e.g. "No such image: ...").
    error: str = ""
    #: A fingerprint of the spec the task was made from: tasks of one version of the
    #: service's task template share it (an update, even a forced one, changes it).
    spec: str = ""
    #: The task's addresses on its networks, with their prefix (C{10.0.1.5/24}).
    addresses: tuple[str, ...] = ()
    #: The node Swarm gave it to (an id, as L{NodeStatus.id}); empty while unassigned.
    node_id: str = ""

    @property
    def ips(self) -> tuple[str, ...]:
        """
        Its addresses without their prefix (C{10.0.1.5}), as DNS gives them.
        """
        return tuple(address.split("/", 1)[0] for address in self.addresses)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def failed(self) -> bool:
        return self.state in FAILED_TASK_STATES

    @property
    def live(self) -> bool:
        """
        Whether Swarm still means this task to run: it runs, or will (a restart waiting
        out its delay, a task being scheduled).
        """
        return self.desired_state in LIVE_DESIRED_STATES and self.state not in ENDED_TASK_STATES


@attrs.frozen
class ServiceStatus:
    """
    A service's wanted replicas and its tasks, as Swarm last reported them.
    """

    name: str
    #: Wanted replicas; C{None} for a global service.
    replicas: int | None
    #: Oldest first, including ended tasks that Swarm still keeps in its history.
    tasks: tuple[TaskStatus, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict)
    #: The restart policy's C{MaxAttempts}: restarts Swarm makes before it gives up;
    #: 0 for no limit.
    max_attempts: int = 0
    #: The restart policy's condition: C{any}, C{on-failure} or C{none}.
    restart_condition: str = "any"
    #: Bytes of memory each task reserves (C{--reserve-memory}); 0 for none.
    memory_reservation: int = 0
    #: Bytes of memory each task may use at most (C{--limit-memory}); 0 for no limit.
    memory_limit: int = 0

    @property
    def running_tasks(self) -> tuple[TaskStatus, ...]:
        """
        Tasks that run and that Swarm wants to keep running. A task being shut down
        (scaled away, replaced by an update) may still answer for its stop grace period,
        but it is dying: it must never make an agent ready or receive its traffic.
        """
        return tuple(task for task in self.tasks
                     if task.running and task.desired_state == "running")

    @property
    def failed_attempts(self) -> int:
        """
        How many of the newest tasks failed in a row: the attempts since Swarm last had a
        task that did not fail (one shut down by scaling, say), counting only tasks of
        the newest task's spec, as an update makes Swarm count its attempts afresh.
        """
        count = 0
        for task in reversed(self.tasks):
            if not task.failed or task.spec != self.tasks[-1].spec:
                break
            count += 1
        return count

    @property
    def restarts_exhausted(self) -> bool:
        """
        Whether Swarm has given up restarting the service: it wants replicas, no task is
        live, and more tasks failed in a row than the restart policy allows restarts.

        Swarm may prune old tasks (C{TaskHistoryRetentionLimit}, 5 by default): where
        the failed attempts have been pruned, exhaustion cannot be counted. Docker 20.10
        keeps every attempt of a crash-looping slot.
        """
        if self.replicas == 0 or any(task.live for task in self.tasks):
            return False
        if self.restart_condition == "none":
            return self.failed_attempts > 0
        return self.max_attempts > 0 and self.failed_attempts > self.max_attempts


#: Node states in which a node runs nothing (Swarm's own names; C{ready} is the good one).
NODE_GONE_STATES = frozenset({"down", "disconnected", "unknown"})


@attrs.frozen
class NodeStatus:
    """
    One node of the swarm, as the manager reports it: where tasks run, and whether it
    still can.
    """

    id: str
    hostname: str
    #: Swarm's node state: C{ready}, C{down} (no heartbeat), C{disconnected}, C{unknown}.
    state: str = "ready"
    #: What the operator said: C{active}, C{pause} (no new tasks) or C{drain} (its tasks
    #: move elsewhere).
    availability: str = "active"
    #: Swarm's word on the state (C{heartbeat failure}), if any.
    message: str = ""
    #: Whether it is the node whose engine this is (the orchestrator's): the one whose
    #: containers' events the engine reports.
    local: bool = False

    @property
    def gone(self) -> bool:
        """
        Whether the node runs nothing any more: it is down, or drained.
        """
        return self.state in NODE_GONE_STATES or self.availability == "drain"

    def describe(self) -> str:
        """
        Why tasks leave it, in a few words (C{node orchc-worker1 is drained}).
        """
        if self.state in NODE_GONE_STATES:
            said = f": {self.message}" if self.message else ""
            return f"node {self.hostname} is {self.state}{said}"
        if self.availability == "drain":
            return f"node {self.hostname} is drained"
        return f"node {self.hostname} is {self.state}, {self.availability}"


@attrs.frozen
class TaskOwner:
    """
    Whose task an address belongs to: L{ISwarm.task_at}'s answer.
    """

    service: str
    task_id: str
    #: The address as the task has it on that network, with its prefix (C{10.0.1.5/24}).
    interface: str


@attrs.frozen
class SwarmEvent:
    """
    Something the engine reported about a service, one of its tasks' containers, or a
    node of the swarm.
    """

    #: The service's name; empty for a node's event.
    service: str
    #: C{service}, C{container} (a task's container) or C{node}.
    kind: str
    #: Docker's action: C{create}, C{update}, C{remove} for services and nodes;
    #: C{start}, C{die}, ... for containers.
    action: str
    #: The task a container belongs to; empty for service and node events.
    task_id: str = ""
    #: The container's exit code, on C{die}.
    exit_code: int | None = None
    #: The node a node event is about (its id); empty otherwise.
    node_id: str = ""


#: The calls of L{ISwarm}, as L{SwarmCalls} names them.
SWARM_CALLS = ("status", "statuses", "scale", "discover", "task_at", "node_memory", "nodes",
               "events")


class SwarmCalls:
    """
    How many calls of each kind an L{ISwarm} was asked to make, and how many failed:
    counters (never reset) that metrics read at scrape time.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def record(self, call: str, failed: bool) -> None:
        self.calls[call] += 1
        if failed:
            self.errors[call] += 1

    def follow(self, call: str, result):
        """
        Count C{call} once the Deferred C{result} fires (failed or not); return C{result}.
        """
        def done(outcome):
            self.record(call, isinstance(outcome, Failure))
            return outcome

        return result.addBoth(done)


class ISwarm(IService):
    """
    What the orchestrator needs from Docker Swarm. Every method returns a Deferred and
    fails with L{SwarmUnavailable}, L{UnknownService} or L{SwarmError}.

    It is a service of the orchestrator's tree: started before anything uses it (the
    real one starts its thread pool then) and stopped after everything else.
    """

    counts = Attribute(
        "A SwarmCalls: every call made (status, statuses, scale, discover, task_at, "
        "node_memory, nodes, events) and "
        "those that failed, counted when its Deferred fires.")

    def status(service: str):  # type: ignore[misc]
        """
        Return a Deferred firing with the L{ServiceStatus} of C{service}.
        """

    def scale(service: str, replicas: int):  # type: ignore[misc]
        """
        Set the wanted replicas of C{service}; fire with C{None} once Swarm accepted it.
        """

    def statuses(services=None):  # type: ignore[misc]
        """
        Return a Deferred firing with a mapping of every service's name to its
        L{ServiceStatus}, read in a bounded number of calls however many services there
        are (one list of services, one of tasks): how the agents are reconciled at start.

        @param services: only these services (names; those that do not exist are left
            out), still in two calls: how the awake agents' tasks are watched.
        """

    def nodes():  # type: ignore[misc]
        """
        Return a Deferred firing with a mapping of every node's id to its
        L{NodeStatus}, in two calls (the nodes, and which is this engine's): why a task
        left its node (drained, down), and which tasks' deaths the events will tell.
        """

    def node_memory():  # type: ignore[misc]
        """
        Return a Deferred firing with the bytes of memory of the engine's node (C{docker
        info}'s C{MemTotal}), for a budget given as a share of it.
        """

    def task_at(address: str):  # type: ignore[misc]
        """
        Return a Deferred firing with the L{TaskOwner} of the task that runs (and that
        Swarm wants running) with C{address} (an IP, no prefix) on one of its networks,
        or C{None} if no such task does.
        """

    def discover(label: str):  # type: ignore[misc]
        """
        Return a Deferred firing with a tuple of L{ServiceStatus}, one for every service
        that carries the label C{label} (any value).
        """

    def events(deliver: Callable[[SwarmEvent], None]):  # type: ignore[misc]
        """
        Subscribe to the engine's service, task and node events (a task's container
        events are its own node's engine's: a manager hears only of the tasks on its own
        node, and of every node's changes): C{deliver} is called on the
        reactor thread with each L{SwarmEvent}, in order, until the subscription ends.

        Return a Deferred firing with an L{ISwarmEvents} once the engine has accepted
        the subscription (from then on nothing is missed), or failing with
        L{SwarmUnavailable} if it cannot be made.
        """


class ISwarmEvents(Interface):
    """
    One subscription to Swarm's events (see L{ISwarm.events}).
    """

    ended = Attribute(
        "A Deferred firing with None once the subscription was stopped (no event is "
        "delivered after it fires), or failing with SwarmUnavailable when the engine "
        "ended it (it went away): subscribe again, and read again what may have been "
        "missed. Whoever subscribed must consume it."
    )

    def stop():  # type: ignore[misc]
        """
        End the subscription; return a Deferred firing when it has ended. No event is
        delivered once this is called.
        """
