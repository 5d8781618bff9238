"""
The Swarm service manager: the only way this program touches Docker.

L{ISwarm} is the interface; L{DockerSwarm} implements it with the Docker SDK, whose
blocking calls run in a thread pool owned by the service (never on the reactor thread).
L{orchestrator.fakeswarm.FakeSwarm} implements it in memory; both pass the same contract
tests (C{tests/test_swarm_contract.py}).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import docker
import docker.errors
import requests.exceptions
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import Attribute, Interface, implementer

_T = TypeVar("_T")

#: Task states in which a task will never run (Swarm's own names).
FAILED_TASK_STATES = frozenset({"failed", "rejected", "orphaned"})
#: Task states after which a task does nothing any more, failed or not.
ENDED_TASK_STATES = FAILED_TASK_STATES | {"complete", "shutdown", "remove"}
#: Desired states of a task Swarm still means to run (C{ready}: a restart waiting out its
#: restart delay).
LIVE_DESIRED_STATES = frozenset({"running", "ready"})

#: The labels Swarm puts on the containers of its tasks.
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
TASK_ID_LABEL = "com.docker.swarm.task.id"
#: The engine events L{DockerSwarm.events} asks for: a service created, updated or
#: removed, a task's container started or died (the rest, such as healthcheck execs, is
#: noise here).
WATCHED_EVENTS = {"type": ["service", "container"],
                  "event": ["create", "update", "remove", "start", "die"]}


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


@attrs.frozen
class SwarmEvent:
    """
    Something the engine reported about a service or one of its tasks' containers.
    """

    #: The service's name.
    service: str
    #: C{service} or C{container} (a task's container).
    kind: str
    #: Docker's action: C{create}, C{update}, C{remove} for services; C{start},
    #: C{die}, ... for containers.
    action: str
    #: The task a container belongs to; empty for service events.
    task_id: str = ""
    #: The container's exit code, on C{die}.
    exit_code: int | None = None


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

    def events(deliver: Callable[[SwarmEvent], None]):  # type: ignore[misc]
        """
        Subscribe to the engine's service and task events: C{deliver} is called on the
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
        return self._call(self._status, service)

    def scale(self, service: str, replicas: int) -> Deferred[None]:
        return self._call(self._scale, service, replicas)

    def discover(self, label: str) -> Deferred[tuple[ServiceStatus, ...]]:
        return self._call(self._discover, label)

    def events(self, deliver: Callable[[SwarmEvent], None]) -> Deferred[ISwarmEvents]:
        """
        Read the engine's event stream in a thread of its own (not the pool's: it
        blocks for as long as the subscription lasts), with a client of its own.
        """
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


def _service_status(inspected: dict, tasks: list[dict]) -> ServiceStatus:
    """
    Docker's JSON for a service and its tasks -> a L{ServiceStatus}.
    """
    spec = inspected["Spec"]
    mode = spec.get("Mode") or {}
    replicas = mode["Replicated"].get("Replicas", 0) if "Replicated" in mode else None
    # Swarm's defaults when a service has no restart policy: condition any, no limit.
    restart = (spec.get("TaskTemplate") or {}).get("RestartPolicy") or {}
    return ServiceStatus(
        name=spec["Name"],
        replicas=replicas,
        tasks=tuple(_task_status(task) for task in sorted(tasks, key=_creation_order)),
        labels=dict(spec.get("Labels") or {}),
        max_attempts=restart.get("MaxAttempts") or 0,
        restart_condition=restart.get("Condition") or "any",
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
    One decoded engine event -> a L{SwarmEvent}, or C{None} if it is not about a Swarm
    service (a container that no service started, a network, ...).
    """
    attributes = (raw.get("Actor") or {}).get("Attributes") or {}
    kind = raw.get("Type", "")
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
        stopped: Deferred[None] = Deferred()
        self.ended.addBoth(lambda result: (stopped.callback(None), result)[1])
        return stopped

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
