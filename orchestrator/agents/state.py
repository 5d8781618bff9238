"""
Registered routes and busy leases kept across a restart, in one small JSON file.

Written whole after every change, atomically (a temporary file beside it, flushed and
fsynced, renamed over it, the directory fsynced), by a thread of its own: a reader (or a
crash) sees the old file or the new one, never half of one. Read once at start: a file
that cannot be read is set aside (renamed, and reported), never a crash; what it holds
for an agent is taken up once the agent is found awake, and dropped if it sleeps (its
routes and leases would have ended with its sleep).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from orchestrator.agents.core import FlowBase
from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.config.model import Backend
from orchestrator.config.values import backend_address
from orchestrator.flows import follow, log_unless_cancelled
from orchestrator.states import AgentState
from orchestrator.status import Lease

log = Logger()

#: The format of the file; a file of another version is set aside, not misread.
VERSION = 1


class DamagedState(Exception):
    """
    The state file is not one this program wrote.
    """


@attrs.frozen
class KeptRoute:
    agent: str
    host: str
    backend: Backend
    registered_at: float


@attrs.frozen
class KeptState:
    routes: tuple[KeptRoute, ...] = ()
    #: (agent name, lease)
    leases: tuple[tuple[str, Lease], ...] = ()

    def of(self, name: str) -> tuple[list[KeptRoute], list[Lease]]:
        return ([route for route in self.routes if route.agent == name],
                [lease for agent, lease in self.leases if agent == name])

    def without(self, name: str) -> KeptState:
        return KeptState(tuple(route for route in self.routes if route.agent != name),
                         tuple(item for item in self.leases if item[0] != name))


def encode(state: KeptState) -> bytes:
    return json.dumps({
        "version": VERSION,
        "routes": [{"agent": route.agent, "host": route.host, "backend": route.backend.url,
                    "registered_at": route.registered_at} for route in state.routes],
        "leases": [{"agent": agent, "id": lease.id, "reason": lease.reason,
                    "acquired": lease.acquired, "expires": lease.expires}
                   for agent, lease in state.leases],
    }, indent=1).encode("utf-8")


def decode(data: bytes) -> KeptState:
    """
    @raise DamagedState: saying what is wrong, if C{data} is not a state file.
    """
    try:
        document = json.loads(data.decode("utf-8"))
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise DamagedState(f"not a version {VERSION} state file")
        routes = tuple(KeptRoute(str(item["agent"]), str(item["host"]),
                                 Backend(*backend_address(item["backend"])),
                                 float(item["registered_at"]))
                       for item in document["routes"])
        leases = tuple((str(item["agent"]), Lease(str(item["id"]), str(item["reason"]),
                                                  float(item["acquired"]),
                                                  float(item["expires"])))
                       for item in document["leases"])
    except DamagedState:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise DamagedState(f"{type(error).__name__}: {error}") from None
    return KeptState(routes, leases)


def write_atomically(path: str, data: bytes) -> None:
    """
    Replace the file at C{path} with C{data}: whole, or not at all.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_or_set_aside(path: str, now: float) -> KeptState:
    """
    What the file at C{path} keeps: nothing if there is no file; if it cannot be read,
    it is renamed C{PATH.damaged-TIME} (kept for a person to look at), reported, and
    nothing is taken from it.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return KeptState()
    except OSError as error:
        log.error("cannot read the state file {path}: {error}; starting without it",
                  path=path, error=error.strerror or error)
        return KeptState()
    try:
        return decode(data)
    except DamagedState as damage:
        aside = f"{path}.damaged-{int(now)}"
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        log.error("the state file {path} is damaged ({damage}); set aside as {aside}, "
                  "starting without its routes and leases", path=path, damage=str(damage),
                  aside=aside, event="state.damaged")
        return KeptState()


class StateKeeper(Service):
    """
    Keeps the registry's registered routes and leases in the file at C{path}.

    @param reactor: for the time, and where the writing thread's results come back.
    @param run: runs a blocking function off the reactor thread, returning a Deferred;
        by default a one-thread pool of this service's own.
    """

    def __init__(self, registry: AgentRegistry, path: str, reactor,
                 run: Callable[..., Deferred] | None = None) -> None:
        self._registry = registry
        self._path = path
        self._reactor = reactor
        self._run = run
        self._pool: ThreadPool | None = None
        self._waiting = KeptState()
        self._saving: Deferred | None = None
        self._dirty = False
        self.setName("state")
        registry.on_change(self.save)
        for agent in registry.values():
            agent.observe(_TakeUp(self, agent))
        registry.observe(self)

    # Lifecycle -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._run is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=1, name="state-file")
            self._pool.start()
        self._waiting = read_or_set_aside(self._path, self._reactor.seconds())
        for name in {route.agent for route in self._waiting.routes} | {
                agent for agent, _ in self._waiting.leases}:
            if name not in self._registry:
                log.info("dropping the kept routes and leases of {agent}: no such agent now",
                         agent=name)
                self._waiting = self._waiting.without(name)

    def stopService(self) -> Deferred:
        """
        Fire once the last change is on disk, then stop the thread.
        """
        super().stopService()
        done = follow(self._saving) if self._saving is not None else succeed(None)

        def stop_pool(_: object) -> None:
            if self._pool is not None:
                self._pool.stop()
                self._pool = None

        return done.addCallback(stop_pool)

    # IRegistryObserver -----------------------------------------------------------------

    def agents_changed(self, added: tuple[Agent, ...], removed: tuple[Agent, ...]) -> None:
        for agent in added:
            agent.observe(_TakeUp(self, agent))
        for agent in removed:
            self._waiting = self._waiting.without(agent.name)

    # Taking up what was kept -----------------------------------------------------------

    def agent_settled(self, agent: Agent, state: AgentState) -> None:
        routes, leases = self._waiting.of(agent.name)
        if not routes and not leases:
            return
        self._waiting = self._waiting.without(agent.name)
        if state is AgentState.SLEEPING:
            log.info("{agent} sleeps: not restoring its {routes} routes and {leases} leases",
                     agent=agent.name, routes=len(routes), leases=len(leases))
            self.save()
            return
        self._registry.restore(agent.name, [(route.host, route.backend, route.registered_at)
                                            for route in routes])
        agent.leases.restore(leases)

    # Saving ----------------------------------------------------------------------------

    def snapshot(self) -> KeptState:
        routes = tuple(KeptRoute(route.agent.name, route.host, route.target,
                                 route.registered_at or 0.0)
                       for route in self._registry.registered())
        leases = tuple((name, lease) for name, agent in self._registry.items()
                       for lease in agent.leases.leases)
        # What waits for its agent to be found awake is kept as it was.
        return KeptState(routes + self._waiting.routes, leases + self._waiting.leases)

    def save(self) -> None:
        """
        Write the current state (after the write in progress, if one is).
        """
        if self._saving is not None:
            self._dirty = True
            return
        data = encode(self.snapshot())
        saving = self._blocking(write_atomically, self._path, data)
        saving.addErrback(log_unless_cancelled, log, "could not write the state file {path}",
                          path=self._path)
        if saving.called:
            return
        self._saving = saving

        def written(_: Any) -> None:
            self._saving = None
            if self._dirty:
                self._dirty = False
                self.save()

        saving.addCallback(written)

    def _blocking(self, function, *args) -> Deferred:
        if self._run is not None:
            return self._run(function, *args)
        if self._pool is None:
            # Not running (stopped, or not started yet): write in this thread.
            function(*args)
            return succeed(None)
        return deferToThreadPool(self._reactor, self._pool, function, *args)


class _TakeUp(FlowBase):
    """
    Tells the keeper when an agent's state is found (at start), so what was kept for it
    is taken up or dropped.
    """

    def __init__(self, keeper: StateKeeper, agent: Agent) -> None:
        self._keeper = keeper
        self._agent = agent

    def settled(self, state: AgentState) -> None:
        self._keeper.agent_settled(self._agent, state)
