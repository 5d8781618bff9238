"""
An in-memory L{ISwarm} for tests, verified by the same contract tests as L{DockerSwarm}.

Like Swarm, scaling up creates new tasks (kept alongside the old ones, which stay in the
history as C{shutdown}), scaling down shuts running tasks down (desired state C{remove},
as Docker 20.10+ reports it), a task whose image is missing is rejected with "No such
image: ...", and only replicated services can be scaled. A task that dies is restarted
as its restart policy says, until C{max_attempts} restarts failed in a row; a service
made with C{exits_at_once} fails each task as soon as it starts, as a broken command
does. Subscribers to L{FakeSwarm.events} hear what the engine would say: a service
created, updated or removed, a task's container started or died.

It has nodes: one by default (the manager, whose engine this is), more with
L{FakeSwarm.add_node}. Tasks are spread over the nodes that are ready and active (a task
with nowhere to go waits, pending, with Swarm's "no suitable node"); draining a node or
losing it (L{FakeSwarm.drain_node}, L{FakeSwarm.node_down}) shuts its tasks down and
places replacements elsewhere, with a node event. As on a real manager, container events
are heard only for the tasks on the engine's own node (the first): a task dying on
another node is seen in the task list alone.

Unlike Swarm, nothing happens by itself over time: tasks run at once when C{auto_run} is
set (restarts too, without their delay), otherwise the test moves them with
L{FakeSwarm.run_tasks}, L{FakeSwarm.fail_tasks}, L{FakeSwarm.kill_tasks} and friends.
"""

from __future__ import annotations

import itertools

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from orchestrator.swarm.values import (
    NODE_GONE_STATES,
    ISwarm,
    ISwarmEvents,
    NodeStatus,
    ServiceStatus,
    SwarmCalls,
    SwarmError,
    SwarmEvent,
    SwarmUnavailable,
    TaskOwner,
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
    max_attempts: int = 0
    restart_condition: str = "any"
    exits_at_once: bool = False
    memory_reservation: int = 0
    memory_limit: int = 0
    #: Bumped by each update of the task template (L{FakeSwarm.force_update}).
    spec_version: int = 1


@implementer(ISwarmEvents)
class _FakeSubscription:
    """
    One subscriber of L{FakeSwarm.events}; events are delivered synchronously.
    """

    def __init__(self, swarm: FakeSwarm, deliver) -> None:
        self.ended: Deferred[None] = Deferred()
        self._swarm = swarm
        self._deliver = deliver

    def stop(self):
        if not self.ended.called:
            self._swarm._subscriptions.remove(self)
            self.ended.callback(None)
        return succeed(None)

    def _end(self, reason: SwarmUnavailable) -> None:
        self._swarm._subscriptions.remove(self)
        self.ended.errback(reason)


@implementer(ISwarm)
class FakeSwarm(Service):
    """
    Swarm in a dictionary. C{scale_calls} records every accepted scale call in order.
    Set C{available} to C{False} to make every call fail with L{SwarmUnavailable}, and
    add an image to C{missing_images} to have the tasks of its services rejected.
    """

    #: What L{node_memory} says the node has, unless a test sets C{memory_total}.
    MEMORY_TOTAL = 8 * 1024 ** 3

    #: The hostname of the node whose engine this is (the manager).
    LOCAL_NODE = "fake-manager"

    def __init__(self, auto_run: bool = True) -> None:
        self.auto_run = auto_run
        self.memory_total = self.MEMORY_TOTAL
        self.available = True
        self.missing_images: set[str] = set()
        self.scale_calls: list[tuple[str, int]] = []
        self.counts = SwarmCalls()
        self._services: dict[str, _FakeService] = {}
        self._task_ids = itertools.count(1)
        self._subscriptions: list[_FakeSubscription] = []
        self._nodes: dict[str, NodeStatus] = {}
        self._local_node = self.add_node(self.LOCAL_NODE)

    # Test controls -------------------------------------------------------------------

    def add_service(
        self,
        name: str,
        replicas: int | None = 0,
        labels: dict[str, str] | None = None,
        image: str = "agent:latest",
        *,
        max_attempts: int = 0,
        restart_condition: str = "any",
        exits_at_once: bool = False,
        memory_reservation: int = 0,
        memory_limit: int = 0,
    ) -> None:
        """
        Create a service as C{docker service create} would, its tasks already running
        (or rejected, if C{image} is in C{missing_images}). C{replicas=None} makes a
        global service, which runs one task (this fake has one node). C{max_attempts}
        and C{restart_condition} are its restart policy; C{exits_at_once} makes each of
        its tasks fail as soon as it starts (it needs a C{max_attempts}, or the fake
        would restart it forever). C{memory_reservation} and C{memory_limit} are its
        tasks' resources, in bytes.
        """
        if exits_at_once and not (max_attempts or restart_condition == "none"):
            raise ValueError("a service whose tasks exit at once needs a max_attempts")
        service = _FakeService(name, replicas, dict(labels or {}), image,
                               max_attempts=max_attempts,
                               restart_condition=restart_condition,
                               exits_at_once=exits_at_once,
                               memory_reservation=memory_reservation,
                               memory_limit=memory_limit)
        self._services[name] = service
        self._emit(SwarmEvent(name, "service", "create"))
        for _ in range(1 if replicas is None else replicas):
            self._add_task(service, "running")

    def remove_service(self, name: str) -> None:
        service = self._services.pop(name)
        for task in service.tasks:
            if task.running:
                self._emit_container(name, "die", task, 137)
        self._emit(SwarmEvent(name, "service", "remove"))

    def run_tasks(self, name: str) -> None:
        """
        Move every task that should run but does not yet to C{running}.
        """
        service = self._services[name]
        for task in list(service.tasks):
            if (task.desired_state == "running" and not task.failed and not task.running
                    and task.node_id):
                self._started(service, task)

    def fail_tasks(self, name: str, error: str, state: str = "rejected") -> None:
        """
        Make every task that should run fail with C{error} (e.g. "No such image: x").
        Nothing is restarted: the test decides what happens next.
        """
        service = self._services[name]
        for task in list(service.tasks):
            if task.desired_state == "running":
                self._replace(service, task, state=state, desired_state="shutdown",
                              error=error)
                if task.running:
                    self._emit_container(name, "die", task, 1)

    def kill_tasks(self, name: str, exit_code: int = 137) -> None:
        """
        Kill the containers of every running task, as C{docker kill} does; Swarm then
        restarts them as the restart policy says.
        """
        service = self._services[name]
        for task in list(service.tasks):
            if task.running:
                self._died(service, task, exit_code)

    def force_update(self, name: str, exits_at_once: bool | None = None) -> None:
        """
        Replace the service's tasks with new ones, as C{docker service update --force}
        does (Swarm counts restart attempts afresh); C{exits_at_once} changes whether
        the new tasks' command fails at once.
        """
        service = self._services[name]
        service.spec_version += 1
        if exits_at_once is not None:
            service.exits_at_once = exits_at_once
        for task in list(service.tasks):
            if task.live:
                self._replace(service, task, state="shutdown", desired_state="shutdown")
                if task.running:
                    self._emit_container(name, "die", task, 137)
        self._emit(SwarmEvent(name, "service", "update"))
        for _ in range(1 if service.replicas is None else service.replicas):
            self._add_task(service)

    def add_node(self, hostname: str, availability: str = "active") -> str:
        """
        Join a node (a worker) to the swarm; return its id. Tasks already placed stay
        where they are, as in Swarm.
        """
        node_id = f"node{len(self._nodes) + 1}-{hostname}"
        self._nodes[node_id] = NodeStatus(node_id, hostname, availability=availability,
                                          local=not self._nodes)
        self._emit(SwarmEvent("", "node", "create", node_id=node_id))
        return node_id

    def node_id(self, hostname: str) -> str:
        for node in self._nodes.values():
            if node.hostname == hostname:
                return node.id
        raise KeyError(f"no node {hostname!r}")

    def drain_node(self, hostname: str) -> None:
        """
        Drain a node (C{docker node update --availability drain}): its tasks are shut
        down and replaced on other nodes.
        """
        self._change_node(hostname, availability="drain")

    def node_down(self, hostname: str, message: str = "heartbeat failure") -> None:
        """
        Lose a node (its engine stopped answering): Swarm marks it down and replaces its
        tasks elsewhere; having no word from the node, it keeps showing them as they were.
        """
        self._change_node(hostname, state="down", message=message)

    def activate_node(self, hostname: str) -> None:
        """
        Make a node ready and active again (nothing moves back to it by itself).
        """
        self._change_node(hostname, state="ready", availability="active", message="")

    def kill_task(self, name: str, task_id: str, exit_code: int = 137) -> None:
        """
        Kill one running task's container; Swarm restarts it as the restart policy says.
        """
        service = self._services[name]
        task = next(task for task in service.tasks if task.id == task_id)
        self._died(service, task, exit_code)

    def end_event_streams(self) -> None:
        """
        End every subscription to L{events} as an engine that went away does.
        """
        for subscription in list(self._subscriptions):
            subscription._end(SwarmUnavailable("fake Docker engine closed the event stream"))

    # ISwarm ---------------------------------------------------------------------------

    def status(self, service: str):
        return self.counts.follow("status", self._status_of(service))

    def scale(self, service: str, replicas: int):
        return self.counts.follow("scale", self._scale(service, replicas))

    def discover(self, label: str):
        return self.counts.follow("discover", self._discover(label))

    def task_at(self, address: str):
        return self.counts.follow("task_at", self._task_at(address))

    def statuses(self, services=None):
        return self.counts.follow("statuses", self._statuses(services))

    def nodes(self):
        return self.counts.follow("nodes", self._read_nodes())

    def node_memory(self):
        return self.counts.follow("node_memory", self._node_memory())

    def events(self, deliver):
        return self.counts.follow("events", self._subscribe(deliver))

    def _status_of(self, service: str):
        try:
            return succeed(self._status(self._get(service)))
        except Exception:
            return fail()

    def _scale(self, service: str, replicas: int):
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
        self._emit(SwarmEvent(service, "service", "update"))
        for task in wanted[replicas:]:
            if task.running:
                self._emit_container(service, "die", task, 137)
        for _ in range(replicas - len(wanted)):
            self._add_task(found)
        return succeed(None)

    def _task_at(self, address: str):
        if not self.available:
            return fail(SwarmUnavailable("fake Docker engine is unavailable"))
        for service in self._services.values():
            for task in service.tasks:
                if task.running and task.desired_state == "running":
                    for interface in task.addresses:
                        if interface.split("/", 1)[0] == address:
                            return succeed(TaskOwner(service.name, task.id, interface))
        return succeed(None)

    def _discover(self, label: str):
        if not self.available:
            return fail(SwarmUnavailable("fake Docker engine is unavailable"))
        return succeed(tuple(
            self._status(service)
            for service in self._services.values()
            if label in service.labels
        ))

    def _statuses(self, services=None):
        if not self.available:
            return fail(SwarmUnavailable("fake Docker engine is unavailable"))
        wanted = self._services.keys() if services is None else set(services)
        return succeed({name: self._status(service) for name, service in self._services.items()
                        if name in wanted})

    def _read_nodes(self):
        if not self.available:
            return fail(SwarmUnavailable("fake Docker engine is unavailable"))
        return succeed(dict(self._nodes))

    def _node_memory(self):
        if not self.available:
            return fail(SwarmUnavailable("fake Docker engine is unavailable"))
        return succeed(self.memory_total)

    def _subscribe(self, deliver):
        if not self.available:
            return fail(SwarmUnavailable("fake Docker engine is unavailable"))
        subscription = _FakeSubscription(self, deliver)
        self._subscriptions.append(subscription)
        return succeed(subscription)

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
                             dict(service.labels), max_attempts=service.max_attempts,
                             restart_condition=service.restart_condition,
                             memory_reservation=service.memory_reservation,
                             memory_limit=service.memory_limit)

    def _emit(self, event: SwarmEvent) -> None:
        for subscription in list(self._subscriptions):
            subscription._deliver(event)

    def _emit_container(self, service: str, action: str, task: TaskStatus,
                        exit_code: int | None = None) -> None:
        """
        A task's container event, heard only if the task is on this engine's own node.
        """
        if task.node_id == self._local_node:
            self._emit(SwarmEvent(service, "container", action, task.id, exit_code))

    def _change_node(self, hostname: str, **changes) -> None:
        node_id = self.node_id(hostname)
        node = self._nodes[node_id] = attrs.evolve(self._nodes[node_id], **changes)
        self._emit(SwarmEvent("", "node", "update", node_id=node_id))
        drained = node.state not in NODE_GONE_STATES  # its engine still stops its tasks
        for service in self._services.values():
            moved = [task for task in service.tasks
                     if node.gone and task.node_id == node_id and task.live]
            for task in moved:
                if drained:
                    self._replace(service, task, state="shutdown", desired_state="shutdown")
                    if task.running:
                        self._emit_container(service.name, "die", task, 0)
                else:
                    self._replace(service, task, desired_state="shutdown")
            for _ in moved:
                self._add_task(service)
        # A task that was waiting for a node may have one now.
        for service in self._services.values():
            self._place_pending(service)

    def _place_pending(self, service: _FakeService) -> None:
        for task in list(service.tasks):
            if task.live and not task.node_id and task.state == "pending":
                node_id = self._placement(service)
                if node_id:
                    placed = attrs.evolve(task, node_id=node_id, error="")
                    service.tasks[service.tasks.index(task)] = placed
                    if self.auto_run:
                        self._started(service, placed)

    def _placement(self, service: _FakeService) -> str:
        """
        The node a new task of C{service} goes to: of those ready and active, the one
        running fewest of its live tasks (Swarm's spread); empty if none can take it.
        """
        usable = [node.id for node in self._nodes.values()
                  if node.state == "ready" and node.availability == "active"]
        if not usable:
            return ""
        load = {node_id: 0 for node_id in usable}
        for task in service.tasks:
            if task.live and task.node_id in load:
                load[task.node_id] += 1
        return min(usable, key=lambda node_id: load[node_id])

    def _add_task(self, service: _FakeService, state: str | None = None) -> None:
        """
        Add a task that should run: C{running} at once with C{auto_run} (or C{state}),
        else C{pending}.
        """
        task = self._new_task(service, "pending")
        service.tasks.append(task)
        if task.state == "pending" and task.node_id and (state == "running" or self.auto_run):
            self._started(service, task)

    def _started(self, service: _FakeService, task: TaskStatus) -> None:
        running = attrs.evolve(task, state="running")
        service.tasks[service.tasks.index(task)] = running
        self._emit_container(service.name, "start", running)
        if service.exits_at_once:
            self._died(service, running, 1)

    def _died(self, service: _FakeService, task: TaskStatus, exit_code: int) -> None:
        self._replace(service, task, state="failed", desired_state="shutdown",
                      error=f"task: non-zero exit ({exit_code})")
        self._emit_container(service.name, "die", task, exit_code)
        status = self._status(service)
        if service.restart_condition != "none" and not status.restarts_exhausted:
            self._add_task(service)

    def _new_task(self, service: _FakeService, state: str) -> TaskStatus:
        number = next(self._task_ids)
        task_id = f"task{number}"
        spec = f"{service.name}-v{service.spec_version}"
        if service.image in self.missing_images:
            return TaskStatus(id=task_id, state="rejected", desired_state="shutdown",
                              error=f"No such image: {service.image}", spec=spec)
        # Every task is on one overlay network, as the agents' tasks are: 10.0.9.0/24
        # and on (an address is never given out twice).
        address = f"10.{number // 250 % 250}.{9 + number // 62500}.{number % 250 + 2}/24"
        node_id = self._placement(service)
        error = "" if node_id else (
            f"no suitable node ({len(self._nodes)} node{'s' if len(self._nodes) != 1 else ''}"
            f" not available for new tasks)")
        return TaskStatus(id=task_id, state=state, desired_state="running", spec=spec,
                          addresses=(address,), node_id=node_id, error=error)

    @staticmethod
    def _replace(service: _FakeService, task: TaskStatus, **changes) -> None:
        service.tasks[service.tasks.index(task)] = attrs.evolve(task, **changes)
