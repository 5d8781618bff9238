"""
The Swarm service manager on a real Docker engine: the only module that imports the
Docker SDK, whose blocking calls run in a thread pool owned by the service (never on the
reactor thread). L{orchestrator.swarm.memory.FakeSwarm} implements the same
L{ISwarm} in memory; both pass the same contract tests (C{tests/swarm/test_contract.py}).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import docker.errors
import requests.exceptions
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from orchestrator.flows import follow
from orchestrator.swarm.values import (
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

_T = TypeVar("_T")


#: The labels Swarm puts on the containers of its tasks.
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


TASK_ID_LABEL = "com.docker.swarm.task.id"


#: The engine events L{DockerSwarm.events} asks for: a service created, updated or
#: removed, a task's container started or died, a node joined, changed (drained, down)
#: or left (the rest, such as healthcheck execs, is noise here). A manager's engine
#: reports the containers of its own node only, but every node's changes.
WATCHED_EVENTS = {"type": ["service", "container", "node"],
                  "event": ["create", "update", "remove", "start", "die"]}


@implementer(ISwarm)
class DockerSwarm(Service):
    """
    L{ISwarm} on a real Docker engine, through the Docker SDK's low-level C{APIClient}.

    The SDK blocks, so every call runs in a thread pool that this service owns: started
    by C{startService}, and stopped by C{stopService} once the calls in flight are done
    (each is bounded by C{timeout}). Calls made while the service is not running fail
    with L{SwarmUnavailable} rather than waiting for a pool that will never run them.

    @param url: The engine's address, e.g. C{unix:///var/run/docker.sock} or
        C{tcp://127.0.0.1:2375}.
    @param reactor: Where the results are delivered (C{IReactorFromThreads}).
    @param timeout: Seconds allowed for each request to the engine.
    @param threadpool: Something with C{callInThreadWithCallback}, owned by the caller
        (neither started nor stopped here); by default a pool of this service's own.
    """

    #: How many times L{scale} reads the spec again after Swarm answered "update out of
    #: sequence" (someone else updated the service between our read and our write).
    scale_attempts = 5

    _log = Logger()

    def __init__(
        self, url: str, reactor, timeout: float = 30.0, threadpool: ThreadPool | None = None
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._reactor = reactor
        self._owns_pool = threadpool is None
        self._pool = threadpool
        self._client: docker.APIClient | None = None
        self._client_lock = threading.Lock()
        self._in_flight = 0
        self._drained: list[Deferred[None]] = []
        self._streams: set[_EventStream] = set()
        self.counts = SwarmCalls()

    # Lifecycle ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._owns_pool:
            # A new pool each time: a stopped ThreadPool cannot be started again.
            self._pool = ThreadPool(minthreads=1, maxthreads=4, name="docker")
            self._pool.start()

    def stopService(self) -> Deferred[None]:
        """
        Refuse new calls, wait for the ones in flight, then stop the thread pool.
        """
        super().stopService()
        drained: Deferred[None] = Deferred()
        if self._in_flight:
            self._drained.append(drained)
        else:
            drained.callback(None)
        # Event streams have threads of their own: closing each one ends its thread.
        streams_ended = [stream.stop() for stream in list(self._streams)]

        pool = self._pool

        def stop_pool(_: object) -> None:
            if self._owns_pool and pool is not None:
                pool.stop()

        return gatherResults([drained, *streams_ended]).addCallback(stop_pool)

    # ISwarm ---------------------------------------------------------------------------

    def status(self, service: str) -> Deferred[ServiceStatus]:
        return self.counts.follow("status", self._call(self._status, service))

    def scale(self, service: str, replicas: int) -> Deferred[None]:
        return self.counts.follow("scale", self._call(self._scale, service, replicas))

    def discover(self, label: str) -> Deferred[tuple[ServiceStatus, ...]]:
        return self.counts.follow("discover", self._call(self._discover, label))

    def statuses(self, services=None) -> Deferred[dict[str, ServiceStatus]]:
        wanted = None if services is None else frozenset(services)
        return self.counts.follow("statuses", self._call(self._statuses, wanted))

    def nodes(self) -> Deferred[dict[str, NodeStatus]]:
        return self.counts.follow("nodes", self._call(self._nodes))

    def node_memory(self) -> Deferred[int]:
        return self.counts.follow("node_memory",
                                  self._call(lambda api: int(api.info()["MemTotal"])))

    def task_at(self, address: str) -> Deferred[TaskOwner | None]:
        return self.counts.follow("task_at", self._call(self._task_at, address))

    def events(self, deliver: Callable[[SwarmEvent], None]) -> Deferred[ISwarmEvents]:
        """
        Read the engine's event stream in a thread of its own (not the pool's: it
        blocks for as long as the subscription lasts), with a client of its own.
        """
        return self.counts.follow("events", self._subscribe(deliver))

    def _subscribe(self, deliver: Callable[[SwarmEvent], None]) -> Deferred[ISwarmEvents]:
        if not self.running:
            return fail(SwarmUnavailable(
                f"the Docker client for {self.url} is not running (DockerSwarm not started)"
            ))
        stream = _EventStream(self, deliver)
        self._streams.add(stream)

        def forget(result: object) -> object:
            self._streams.discard(stream)
            return result

        stream.ended.addBoth(forget)
        return stream.open()

    # Reactor thread -------------------------------------------------------------------

    def _call(self, work: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if not self.running:
            return fail(SwarmUnavailable(
                f"the Docker client for {self.url} is not running (DockerSwarm not started)"
            ))
        self._in_flight += 1
        result = deferToThreadPool(self._reactor, self._pool, self._in_thread, work, *args)
        return result.addBoth(self._call_done)

    def _call_done(self, result: _T) -> _T:
        self._in_flight -= 1
        if not self._in_flight:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)
        return result

    # Worker threads: everything below blocks ------------------------------------------

    def _in_thread(self, work: Callable[..., _T], *args: Any) -> _T:
        """
        Run C{work(api, *args)}, turning whatever Docker or the network raised into a
        L{SwarmError}: no docker or requests exception leaves this module.
        """
        return self._translating(lambda: work(self._api(), *args))

    def _translating(self, call: Callable[[], _T]) -> _T:
        """
        Return C{call()}, turning what Docker or the network raised into a L{SwarmError}.
        """
        try:
            return call()
        except SwarmError:
            raise
        except docker.errors.APIError as error:
            explanation = error.explanation or str(error)
            if error.status_code == 503 or "not a swarm manager" in explanation.lower():
                raise SwarmUnavailable(
                    f"the Docker engine at {self.url} cannot manage Swarm services: "
                    f"{explanation}"
                ) from error
            raise SwarmError(
                f"the Docker engine at {self.url} refused the request: {explanation}"
            ) from error
        except requests.exceptions.Timeout as error:
            raise SwarmUnavailable(
                f"the Docker engine at {self.url} did not answer within {self.timeout}s"
            ) from error
        except (docker.errors.DockerException, requests.exceptions.RequestException,
                OSError) as error:
            raise SwarmUnavailable(
                f"cannot reach the Docker engine at {self.url}: {error}"
            ) from error

    def _api(self) -> docker.APIClient:
        """
        The client, made on first use: C{version="auto"} asks the engine for its API
        version, which must not happen on the reactor thread nor fail the constructor.
        """
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, timeout=self.timeout, version="auto")

    def _status(self, api: docker.APIClient, service: str) -> ServiceStatus:
        try:
            inspected = api.inspect_service(service)
            # The "service" filter also matches ID prefixes: keep this service's own.
            tasks = api.tasks(filters={"service": inspected["ID"]})
        except docker.errors.NotFound:
            raise UnknownService(service) from None
        return _service_status(
            inspected, [task for task in tasks if task.get("ServiceID") == inspected["ID"]]
        )

    def _scale(self, api: docker.APIClient, service: str, replicas: int) -> None:
        """
        Write the spec back with only the replicas changed, as C{docker service scale}
        does: a changed task template would make Swarm replace every running task.
        """
        for attempt in range(1, self.scale_attempts + 1):
            try:
                inspected = api.inspect_service(service)
            except docker.errors.NotFound:
                raise UnknownService(service) from None
            spec = inspected["Spec"]
            mode = spec.get("Mode") or {}
            if "Replicated" not in mode:
                raise SwarmError(
                    f"cannot scale service {service!r}: it runs in {_mode_name(mode)} mode, "
                    f"and only replicated services have a number of replicas"
                )
            if mode["Replicated"].get("Replicas", 0) == replicas:
                return
            try:
                api.update_service(
                    inspected["ID"],
                    version=inspected["Version"]["Index"],
                    name=spec["Name"],
                    labels=spec.get("Labels"),
                    mode={"Replicated": {**mode["Replicated"], "Replicas": replicas}},
                    task_template=spec.get("TaskTemplate"),
                    update_config=spec.get("UpdateConfig"),
                    rollback_config=spec.get("RollbackConfig"),
                    endpoint_spec=spec.get("EndpointSpec"),
                )
            except docker.errors.NotFound:
                raise UnknownService(service) from None
            except docker.errors.APIError as error:
                conflict = "update out of sequence" in (error.explanation or "")
                if not conflict or attempt == self.scale_attempts:
                    raise
                self._log.info(
                    "service {service} changed while we scaled it; reading it again",
                    service=service, attempt=attempt, event="swarm.scale.conflict",
                )
                continue
            self._log.info(
                "scaled {service} to {replicas}", service=service, replicas=replicas,
                event="swarm.scaled",
            )
            return

    def _task_at(self, api: docker.APIClient, address: str) -> TaskOwner | None:
        # One list of the tasks Swarm wants running, rather than one read per service.
        for task in api.tasks(filters={"desired-state": "running"}):
            status = _task_status(task)
            if not status.running:
                continue
            for interface in status.addresses:
                if interface.split("/", 1)[0] == address:
                    service = api.inspect_service(task["ServiceID"])["Spec"]["Name"]
                    return TaskOwner(service, status.id, interface)
        return None

    def _discover(self, api: docker.APIClient, label: str) -> tuple[ServiceStatus, ...]:
        services = api.services(filters={"label": label})
        if not services:
            return ()
        # One unfiltered request rather than one per service: a "service" filter naming a
        # service removed meanwhile would fail the whole call.
        tasks_by_service: dict[str, list[dict]] = {}
        for task in api.tasks():
            tasks_by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        return tuple(sorted(
            (_service_status(found, tasks_by_service.get(found["ID"], []))
             for found in services),
            key=lambda status: status.name,
        ))


    def _statuses(self, api: docker.APIClient,
                  wanted: frozenset[str] | None) -> dict[str, ServiceStatus]:
        # Two requests whatever the number of services: the tasks are listed once, all
        # of them (history included), and grouped here.
        if wanted is None:
            services = api.services()
            tasks = api.tasks()
        elif not wanted:
            return {}
        else:
            # Docker's "name" filter matches prefixes: keep the exact names. The tasks
            # are asked for by service id, as a name that no longer exists (removed
            # meanwhile) would fail the whole request.
            services = [found for found in api.services(filters={"name": sorted(wanted)})
                        if found["Spec"]["Name"] in wanted]
            if not services:
                return {}
            try:
                tasks = api.tasks(filters={"service": [found["ID"] for found in services]})
            except docker.errors.NotFound:
                tasks = api.tasks()  # a service removed between the two requests
        tasks_by_service: dict[str, list[dict]] = {}
        for task in tasks:
            tasks_by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        statuses = (_service_status(found, tasks_by_service.get(found["ID"], []))
                    for found in services)
        return {status.name: status for status in statuses}

    def _nodes(self, api: docker.APIClient) -> dict[str, NodeStatus]:
        local = ((api.info().get("Swarm") or {}).get("NodeID")) or ""
        return {node["ID"]: _node_status(node, local) for node in api.nodes()}


def _service_status(inspected: dict, tasks: list[dict]) -> ServiceStatus:
    """
    Docker's JSON for a service and its tasks -> a L{ServiceStatus}.
    """
    spec = inspected["Spec"]
    mode = spec.get("Mode") or {}
    replicas = mode["Replicated"].get("Replicas", 0) if "Replicated" in mode else None
    # Swarm's defaults when a service has no restart policy: condition any, no limit.
    template = spec.get("TaskTemplate") or {}
    restart = template.get("RestartPolicy") or {}
    resources = template.get("Resources") or {}
    return ServiceStatus(
        name=spec["Name"],
        replicas=replicas,
        tasks=tuple(_task_status(task) for task in sorted(tasks, key=_creation_order)),
        labels=dict(spec.get("Labels") or {}),
        max_attempts=restart.get("MaxAttempts") or 0,
        restart_condition=restart.get("Condition") or "any",
        memory_reservation=(resources.get("Reservations") or {}).get("MemoryBytes") or 0,
        memory_limit=(resources.get("Limits") or {}).get("MemoryBytes") or 0,
    )


def _task_status(task: dict) -> TaskStatus:
    status = task.get("Status") or {}
    spec = json.dumps(task.get("Spec") or {}, sort_keys=True).encode()
    return TaskStatus(
        id=task["ID"],
        state=status.get("State", ""),
        desired_state=task.get("DesiredState", ""),
        error=status.get("Err") or "",
        spec=hashlib.sha256(spec).hexdigest()[:16],
        addresses=tuple(address for attachment in task.get("NetworksAttachments") or ()
                        for address in attachment.get("Addresses") or ()),
        node_id=task.get("NodeID") or "",
    )


def _node_status(node: dict, local: str) -> NodeStatus:
    status = node.get("Status") or {}
    return NodeStatus(
        local=node["ID"] == local,
        id=node["ID"],
        hostname=(node.get("Description") or {}).get("Hostname", "") or node["ID"][:12],
        state=status.get("State", "unknown"),
        availability=(node.get("Spec") or {}).get("Availability", "active"),
        message=status.get("Message") or "",
    )


def _creation_order(task: dict) -> tuple[str, str]:
    """
    Sort key for Docker's RFC 3339 timestamps, which drop trailing zeros from the
    fraction (so C{.5Z} must sort after C{.25Z}); Swarm always writes them in UTC.
    """
    seconds, _, fraction = task.get("CreatedAt", "").rstrip("Z").partition(".")
    return seconds, fraction.ljust(9, "0")


def _mode_name(mode: Mapping[str, object]) -> str:
    return "/".join(name.lower() for name in mode) or "an unknown"


def swarm_event(raw: Mapping[str, Any]) -> SwarmEvent | None:
    """
    One decoded engine event -> a L{SwarmEvent}, or C{None} if it is about neither a
    Swarm service nor a node (a container that no service started, a network, ...).
    """
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    kind = raw.get("Type", "")
    if kind == "node":
        node_id = actor.get("ID", "")
        return SwarmEvent(service="", kind=kind, action=raw.get("Action", ""),
                          node_id=node_id) if node_id else None
    if kind == "service":
        service = attributes.get("name", "")
    elif kind == "container":
        service = attributes.get(SERVICE_NAME_LABEL, "")
    else:
        return None
    if not service:
        return None
    exit_code = attributes.get("exitCode", "")
    return SwarmEvent(
        service=service,
        kind=kind,
        action=raw.get("Action", ""),
        task_id=attributes.get(TASK_ID_LABEL, ""),
        exit_code=int(exit_code) if exit_code.isdigit() else None,
    )


@implementer(ISwarmEvents)
class _EventStream:
    """
    One subscription to the engine's C{/events}, read by a thread of its own that
    hands each event to the reactor thread.

    The thread blocks reading the HTTP response; L{stop} closes the response's socket
    from the reactor thread, which ends the read at once (the SDK's C{CancellableStream}
    exists for exactly this).
    """

    def __init__(self, swarm: DockerSwarm, deliver: Callable[[SwarmEvent], None]) -> None:
        self.ended: Deferred[None] = Deferred()
        self._swarm = swarm
        self._reactor = swarm._reactor
        self._deliver = deliver
        self._opened: Deferred[ISwarmEvents] = Deferred()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._stopping = False

    def open(self) -> Deferred[ISwarmEvents]:
        threading.Thread(target=self._read, name="docker-events", daemon=True).start()
        return self._opened

    def stop(self) -> Deferred[None]:
        with self._lock:
            self._stopping = True
            stream = self._stream
        if stream is not None:
            _close(stream)
        return follow(self.ended)

    # The reactor thread, called from the stream's thread ------------------------------

    def _delivered(self, event: SwarmEvent) -> None:
        if not self._stopping:
            self._deliver(event)

    def _not_opened(self, error: SwarmError) -> None:
        # Nobody holds this subscription, so nobody would consume a failed "ended".
        self.ended.callback(None)
        self._opened.errback(error)

    def _finished(self, problem: str) -> None:
        if self._stopping:
            self.ended.callback(None)
        else:
            self.ended.errback(SwarmUnavailable(
                f"the event stream of the Docker engine at {self._swarm.url} ended: {problem}"
            ))

    # The stream's thread: everything below blocks -------------------------------------

    def _read(self) -> None:
        client = None

        def subscribe() -> Any:
            nonlocal client
            client = self._swarm._new_client()
            stream = client.events(decode=True, filters=WATCHED_EVENTS)
            # The SDK would report a refused subscription only once the stream is read.
            client._raise_for_status(stream._response)
            return stream

        try:
            stream = self._swarm._translating(subscribe)
        except SwarmError as error:
            if client is not None:
                client.close()
            self._reactor.callFromThread(self._not_opened, error)
            return
        with self._lock:
            self._stream = stream
            stopping = self._stopping
        if stopping:
            _close(stream)
        self._reactor.callFromThread(self._opened.callback, self)
        problem = "the engine closed it"
        try:
            for raw in stream:
                event = swarm_event(raw)
                if event is not None:
                    self._reactor.callFromThread(self._delivered, event)
        # The SDK ends the iteration quietly when the connection drops; whatever else a
        # broken stream raises (a half-written JSON document, ...) ends it as well.
        except Exception as error:
            problem = str(error) or type(error).__name__
        finally:
            client.close()
        self._reactor.callFromThread(self._finished, problem)


def _close(stream: Any) -> None:
    """
    Close an SDK event stream's connection, which unblocks the thread reading it.
    """
    try:
        stream.close()
    except (OSError, docker.errors.DockerException):
        pass
