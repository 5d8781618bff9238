"""
An in-memory L{ISwarm} for tests, verified by the same contract tests as L{DockerSwarm}.

Like Swarm, scaling up creates new tasks (kept alongside the old ones, which stay in the
history as C{shutdown}), scaling down shuts running tasks down (desired state C{remove},
as Docker 20.10+ reports it), a task whose image is missing is rejected with "No such
image: ...", and only replicated services can be scaled. Unlike Swarm, nothing happens by
itself over time: tasks run at once when C{auto_run} is set, otherwise the test moves
them with L{FakeSwarm.run_tasks}, L{FakeSwarm.fail_tasks} and friends.
"""

from __future__ import annotations

import itertools

import attrs
from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from orchestrator.swarm import (
    ISwarm,
    ServiceStatus,
    SwarmError,
    SwarmUnavailable,
    TaskStatus,
    UnknownService,
)


@attrs.define
class _FakeService:
    name: str
    replicas: int | None
    labels: dict[str, str]
    image: str
    tasks: list[TaskStatus] = attrs.Factory(list)


@implementer(ISwarm)
class FakeSwarm:
    """
    Swarm in a dictionary. C{scale_calls} records every accepted scale call in order.
    Set C{available} to C{False} to make every call fail with L{SwarmUnavailable}, and
    add an image to C{missing_images} to have the tasks of its services rejected.
    """

    def __init__(self, auto_run: bool = True) -> None:
        self.auto_run = auto_run
        self.available = True
        self.missing_images: set[str] = set()
        self.scale_calls: list[tuple[str, int]] = []
        self._services: dict[str, _FakeService] = {}
        self._task_ids = itertools.count(1)

    # Test controls -------------------------------------------------------------------

    def add_service(
        self,
        name: str,
        replicas: int | None = 0,
        labels: dict[str, str] | None = None,
        image: str = "agent:latest",
    ) -> None:
        """
        Create a service as C{docker service create} would, its tasks already running
        (or rejected, if C{image} is in C{missing_images}). C{replicas=None} makes a
        global service, which runs one task (this fake has one node).
        """
        service = _FakeService(name, replicas, dict(labels or {}), image)
        self._services[name] = service
        for _ in range(1 if replicas is None else replicas):
            service.tasks.append(self._new_task(service, "running"))

    def remove_service(self, name: str) -> None:
        del self._services[name]

    def run_tasks(self, name: str) -> None:
        """
        Move every task that should run but does not yet to C{running}.
        """
        self._replace_tasks(name, lambda t: t.desired_state == "running" and not t.failed,
                            state="running")

    def fail_tasks(self, name: str, error: str, state: str = "rejected") -> None:
        """
        Make every task that should run fail with C{error} (e.g. "No such image: x").
        """
        self._replace_tasks(name, lambda t: t.desired_state == "running",
                            state=state, desired_state="shutdown", error=error)

    # ISwarm ---------------------------------------------------------------------------

    def status(self, service: str):
        try:
            return succeed(self._status(self._get(service)))
        except Exception:
            return fail()

    def scale(self, service: str, replicas: int):
        try:
            found = self._get(service)
        except Exception:
            return fail()
        if found.replicas is None:
            return fail(SwarmError(
                f"cannot scale service {service!r}: it runs in global mode, "
                f"and only replicated services have a number of replicas"
            ))
        self.scale_calls.append((service, replicas))
        found.replicas = replicas
        wanted = [t for t in found.tasks if t.desired_state == "running"]
        for task in wanted[replicas:]:
            self._replace(found, task, state="shutdown", desired_state="remove")
        initial = "running" if self.auto_run else "pending"
        for _ in range(replicas - len(wanted)):
            found.tasks.append(self._new_task(found, initial))
        return succeed(None)

    def discover(self, label: str):
        if not self.available:
            return fail(SwarmUnavailable("fake Docker engine is unavailable"))
        return succeed(tuple(
            self._status(service)
            for service in self._services.values()
            if label in service.labels
        ))

    # Internals ------------------------------------------------------------------------

    def _get(self, name: str) -> _FakeService:
        if not self.available:
            raise SwarmUnavailable("fake Docker engine is unavailable")
        try:
            return self._services[name]
        except KeyError:
            raise UnknownService(name) from None

    def _status(self, service: _FakeService) -> ServiceStatus:
        return ServiceStatus(service.name, service.replicas, tuple(service.tasks),
                             dict(service.labels))

    def _new_task(self, service: _FakeService, state: str) -> TaskStatus:
        task_id = f"task{next(self._task_ids)}"
        if service.image in self.missing_images:
            return TaskStatus(id=task_id, state="rejected", desired_state="shutdown",
                              error=f"No such image: {service.image}")
        return TaskStatus(id=task_id, state=state, desired_state="running")

    def _replace_tasks(self, name, predicate, **changes) -> None:
        service = self._services[name]
        for task in list(service.tasks):
            if predicate(task):
                self._replace(service, task, **changes)

    @staticmethod
    def _replace(service: _FakeService, task: TaskStatus, **changes) -> None:
        service.tasks[service.tasks.index(task)] = attrs.evolve(task, **changes)
