"""
The Swarm service manager: the only way this program touches Docker.

L{ISwarm} is the interface; L{DockerSwarm} implements it with the Docker SDK, whose
blocking calls run in a thread pool owned by the service (never on the reactor thread).
L{orchestrator.fakeswarm.FakeSwarm} implements it in memory; both pass the same contract
tests (C{tests/test_swarm_contract.py}).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from zope.interface import Interface

#: Task states in which a task will never run (Swarm's own names).
FAILED_TASK_STATES = frozenset({"failed", "rejected", "orphaned"})


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
    #: What Swarm wants: C{running} or C{shutdown}.
    desired_state: str
    #: Swarm's error for a task that failed or was rejected (e.g. "No such image: ...").
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def failed(self) -> bool:
        return self.state in FAILED_TASK_STATES


@attrs.frozen
class ServiceStatus:
    """
    A service's wanted replicas and its tasks, as Swarm last reported them.
    """

    name: str
    #: Wanted replicas; C{None} for a global service.
    replicas: int | None
    tasks: tuple[TaskStatus, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def running_tasks(self) -> tuple[TaskStatus, ...]:
        return tuple(task for task in self.tasks if task.running)


class ISwarm(Interface):
    """
    What the orchestrator needs from Docker Swarm. Every method returns a Deferred and
    fails with L{SwarmUnavailable}, L{UnknownService} or L{SwarmError}.
    """

    def status(service: str):  # type: ignore[misc]
        """
        Return a Deferred firing with the L{ServiceStatus} of C{service}.
        """

    def scale(service: str, replicas: int):  # type: ignore[misc]
        """
        Set the wanted replicas of C{service}; fire with C{None} once Swarm accepted it.
        """

    def discover(label: str):  # type: ignore[misc]
        """
        Return a Deferred firing with a tuple of L{ServiceStatus}, one for every service
        that carries the label C{label} (any value).
        """
