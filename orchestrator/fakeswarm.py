"""
An in-memory L{ISwarm} for tests, verified by the same contract tests as L{DockerSwarm}.

Like Swarm, scaling up creates new tasks (kept alongside the old ones, which stay in the
history as C{shutdown}), and scaling down shuts running tasks down. Unlike Swarm, nothing
happens by itself over time: tasks run at once when C{auto_run} is set, otherwise the
test moves them with L{FakeSwarm.run_tasks}, L{FakeSwarm.fail_tasks} and friends.
"""

from __future__ import annotations

import itertools

import attrs
from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from orchestrator.swarm import ISwarm, ServiceStatus, SwarmUnavailable, TaskStatus, UnknownService


@attrs.define
class _FakeService:
    name: str
    replicas: int | None
    labels: dict[str, str]
    tasks: list[TaskStatus] = attrs.Factory(list)


@implementer(ISwarm)
class FakeSwarm:
    """
    Swarm in a dictionary. C{scale_calls} records every accepted scale call in order.
    """

    def __init__(self, auto_run: bool = True) -> None:
        self.auto_run = auto_run
        self.available = True
        self.scale_calls: list[tuple[str, int]] = []
        self._services: dict[str, _FakeService] = {}
        self._task_ids = itertools.count(1)

    # Test controls -------------------------------------------------------------------

    def add_service(
        self, name: str, replicas: int | None = 0, labels: dict[str, str] | None = None
    ) -> None:
        """
        Create a service as C{docker service create} would, its tasks already running.
        """
        service = _FakeService(name, replicas, dict(labels or {}))
        self._services[name] = service
        for _ in range(replicas or 0):
            service.tasks.append(self._new_task("running"))

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
                            state=state, error=error)

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
        self.scale_calls.append((service, replicas))
        found.replicas = replicas
        wanted = [t for t in found.tasks if t.desired_state == "running"]
        for task in wanted[replicas:]:
            self._replace(found, task, state="shutdown", desired_state="shutdown")
        initial = "running" if self.auto_run else "pending"
        for _ in range(replicas - len(wanted)):
            found.tasks.append(self._new_task(initial))
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

    def _new_task(self, state: str) -> TaskStatus:
        return TaskStatus(id=f"task{next(self._task_ids)}", state=state, desired_state="running")

    def _replace_tasks(self, name, predicate, **changes) -> None:
        service = self._services[name]
        for task in list(service.tasks):
            if predicate(task):
                self._replace(service, task, **changes)

    @staticmethod
    def _replace(service: _FakeService, task: TaskStatus, **changes) -> None:
        service.tasks[service.tasks.index(task)] = attrs.evolve(task, **changes)
