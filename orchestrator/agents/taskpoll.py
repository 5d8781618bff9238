"""
Watching the awake agents' tasks on other nodes: one bounded read of their services
(L{ISwarm.statuses} with their names: two calls however many agents) every
L{TASK_POLL} seconds, each agent acting on what it shows, and the swarm's nodes read
again whenever a node changed (drained, down, back).

Why: the engine's container events are its own node's. A task dying on a worker says
nothing on the manager's event stream; only the task list shows it (about 0.2 s after
the fact, docs/multinode.md). So an agent is watched while awake with a task on another
node, or none live (a replacement may go anywhere), or before the nodes are known; one
whose tasks all run on the engine's own node is left to its events. Sleeping agents are
not watched: with none to watch there is no timer and no call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from orchestrator.flows import cancel_call, follow, log_unless_cancelled
from orchestrator.swarm.values import (
    NodeStatus,
    ServiceStatus,
    SwarmError,
    UnknownService,
)

log = Logger()

#: Seconds between two reads of the awake agents' tasks: a task dying on another node
#: makes its agent degraded within about this much (plus Swarm's ~0.2 s to record it).
TASK_POLL = 0.5

#: What a watcher is handed: the service's status, or why it could not be read.
Seen = Callable[[ServiceStatus | SwarmError], object]


class TaskPoll:
    """
    The awake agents' tasks, read together while any agent is awake.

    @param swarm: an L{orchestrator.swarm.values.ISwarm}.
    @param clock: an C{IReactorTime}.
    @param interval: seconds between reads.
    """

    def __init__(self, swarm, clock, interval: float = TASK_POLL) -> None:
        self._swarm = swarm
        self._clock = clock
        self.interval = interval
        #: Each watcher (an agent's flow) -> (its service, what it is handed).
        self._watched: dict[object, tuple[str, Seen]] = {}
        self._timer = None
        self._reading: Deferred | None = None
        self._read_again = False
        self._reading_nodes: Deferred | None = None
        self._stopped = False
        #: Whether the last read failed (the next failure is not logged again).
        self._failing = False
        #: The swarm's nodes by id, as last read (empty until then).
        self.nodes: Mapping[str, NodeStatus] = {}

    @property
    def local_node(self) -> str:
        """
        The id of the node whose engine this is (its containers' events are heard),
        once the nodes were read; empty until then.
        """
        return next((node.id for node in self.nodes.values() if node.local), "")

    def needed_for(self, task_nodes: frozenset[str]) -> bool:
        """
        Whether an awake agent whose live tasks are on C{task_nodes} (empty: none
        live) needs the poll: unless every one is on this engine's node, whose events
        tell of their deaths (and of a move elsewhere, which starts with one).
        """
        local = self.local_node
        return not local or not task_nodes or any(node != local for node in task_nodes)

    @property
    def watched(self) -> int:
        """
        How many agents are watched.
        """
        return len(self._watched)

    def watch(self, watcher: object, service: str, seen: Seen) -> None:
        """
        Read C{service} with the others from now on and hand C{seen} what it shows, until
        L{forget}. The first watcher starts the reads (and reads the nodes once).
        """
        if self._stopped:
            return
        first = not self._watched
        self._watched[watcher] = (service, seen)
        if first:
            if not self.nodes:
                self._read_nodes(then_poll=False)
            self._schedule()

    def forget(self, watcher: object) -> None:
        """
        Stop reading for C{watcher}; with none left, the timer goes.
        """
        self._watched.pop(watcher, None)
        if not self._watched:
            self._timer = cancel_call(self._timer)

    def nodes_changed(self) -> Deferred:
        """
        A node changed: read the nodes, then the awake agents' tasks at once (their tasks
        on it are moving). Fires when the nodes were read; never fails.
        """
        return self._read_nodes(then_poll=True)

    def _read_nodes(self, then_poll: bool) -> Deferred:
        if self._stopped or not self._watched:
            return succeed(None)
        if self._reading_nodes is not None:
            return follow(self._reading_nodes)
        reading = self._reading_nodes = self._swarm.nodes()

        def read(nodes: dict[str, NodeStatus]) -> None:
            self.nodes = nodes

        def not_read(failure) -> None:
            failure.trap(SwarmError)
            log.info("could not read the swarm's nodes: {error}",
                     error=failure.getErrorMessage())

        def done(_) -> None:
            self._reading_nodes = None
            if then_poll:
                self.poll_now()

        reading.addCallbacks(read, not_read).addErrback(
            log_unless_cancelled, log, "reading the swarm's nodes failed")
        reading.addBoth(done)
        return follow(reading)

    def poll_now(self) -> Deferred:
        """
        Read the watched services now (once more after a read under way). Fires when
        read; never fails.
        """
        if self._stopped or not self._watched:
            return succeed(None)
        self._timer = cancel_call(self._timer)
        if self._reading is not None:
            self._read_again = True
            return follow(self._reading)
        watched = dict(self._watched)
        services = sorted({service for service, _ in watched.values()})
        reading = self._reading = self._swarm.statuses(services=services)
        reading.addCallbacks(self._read, self._not_read, callbackArgs=(watched,),
                             errbackArgs=(watched,))
        reading.addErrback(log_unless_cancelled, log, "reading the awake agents' tasks failed")
        reading.addBoth(self._read_done)
        return follow(reading)

    def stop(self) -> None:
        """
        No more reads (the service stops).
        """
        self._stopped = True
        self._watched.clear()
        self._timer = cancel_call(self._timer)

    def _schedule(self) -> None:
        if self._watched and not self._stopped and (
                self._timer is None or not self._timer.active()):
            self._timer = self._clock.callLater(self.interval, self.poll_now)

    def _read(self, statuses: dict[str, ServiceStatus], watched) -> None:
        if self._failing:
            self._failing = False
            log.info("the awake agents' tasks can be read again")
        for watcher, (service, seen) in watched.items():
            if self._watched.get(watcher, (None,))[0] != service:
                continue  # forgotten (slept) or reconfigured meanwhile
            status = statuses.get(service)
            self._hand(seen, status if status is not None else UnknownService(service))

    def _not_read(self, failure, watched) -> None:
        # Each agent reads again by itself when the engine is away (sync's retry): the
        # poll just keeps its pace.
        # Logged once until a read succeeds: the poll keeps its pace meanwhile.
        failure.trap(SwarmError)
        if not self._failing:
            self._failing = True
            log.info("could not read the awake agents' tasks: {error}",
                     error=failure.getErrorMessage())

    @staticmethod
    def _hand(seen: Seen, status: ServiceStatus | SwarmError) -> None:
        try:
            seen(status)
        except Exception:
            # One agent's trouble never stops the others' news.
            log.failure("an agent failed to take up its tasks")

    def _read_done(self, result) -> None:
        self._reading = None
        if self._read_again:
            self._read_again = False
            self.poll_now()
        else:
            self._schedule()
