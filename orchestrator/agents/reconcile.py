"""
Reading Swarm for every agent at once: at start, and whenever the event stream
(re)opens and anything may have happened meanwhile. One L{ISwarm.statuses} (a list of
services and a list of tasks: two calls, however many agents) hands each agent its
service's status, rather than a thousand agents each reading their own.

Between those moments nothing here runs: the engine's events nudge the agents they
concern, one by one, through the registry.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.agents.sync import RECONCILE_RETRY
from orchestrator.flows import cancel_call, follow, log_unless_cancelled
from orchestrator.swarm.values import (
    ServiceStatus,
    SwarmError,
    SwarmEvent,
    SwarmUnavailable,
    UnknownService,
)
from orchestrator.swarm.watcher import ISwarmListener

log = Logger()


@implementer(ISwarmListener)
class Reconciler:
    """
    The Swarm watcher's listener, in front of the registry: news of one service goes
    to its agents as it comes; "everything may have changed" is one read for all.

    @param registry: the agents.
    @param swarm: an L{orchestrator.swarm.values.ISwarm}.
    @param clock: for the retries while the engine cannot be read.
    """

    def __init__(self, registry: AgentRegistry, swarm, clock, task_poll=None) -> None:
        """
        @param task_poll: the awake agents' tasks read together
            (L{orchestrator.agents.taskpoll.TaskPoll}): told when a node changed, and
            stopped with the agents.
        """
        self._task_poll = task_poll
        self._registry = registry
        self._swarm = swarm
        self._clock = clock
        self._reading: Deferred | None = None
        self._read_again = False
        self._retry = None
        #: Agents whose first reconciliation failed with the read, waiting for the next.
        self._unreconciled: list[Agent] = []

    def start(self, agents: Iterable[Agent]) -> Deferred:
        """
        Reconcile C{agents} with one read of every service. Fires once each has taken
        up its state; if the engine cannot be read, they are degraded saying why, and
        the read is tried again every L{RECONCILE_RETRY} seconds until it succeeds.
        """
        agents = list(agents)
        if not agents:
            return succeed(None)
        reading = self._swarm.statuses()

        def read(statuses: dict[str, ServiceStatus]) -> None:
            for agent in agents:
                self._start(agent, _status_of(agent, statuses))

        def failed(failure) -> None:
            failure.trap(SwarmError)
            error = failure.value
            log.warn("cannot read the agents' services: {error}", error=str(error))
            for agent in agents:
                self._start(agent, error)
            if isinstance(error, SwarmUnavailable):
                self._unreconciled.extend(agents)
                self._schedule_retry()

        return reading.addCallbacks(read, failed).addErrback(
            log_unless_cancelled, log, "reconciling the agents failed")

    def stop(self) -> None:
        if self._task_poll is not None:
            self._task_poll.stop()
        self._retry = cancel_call(self._retry)
        self._unreconciled = []

    def _start(self, agent: Agent, given: ServiceStatus | SwarmError, retry=False) -> None:
        agent.start(given, retry=retry).addErrback(
            log_unless_cancelled, log, "reconciling {agent} failed", agent=agent.name)

    # ISwarmListener --------------------------------------------------------------------

    def watches(self, service: str) -> bool:
        return self._registry.watches(service)

    def service_changed(self, service: str, events: tuple[SwarmEvent, ...]) -> None:
        self._registry.service_changed(service, events)

    def nodes_changed(self, events: tuple[SwarmEvent, ...]) -> None:
        """
        A node joined, changed (drained, down, back) or left: the awake agents' tasks on
        it are moving, so the nodes and their tasks are read at once.
        """
        if self._task_poll is not None:
            self._task_poll.nodes_changed()

    def everything_changed(self) -> None:
        """
        Read every service once (once more after a read under way, which may have
        started before the news) and hand each agent what Swarm shows.
        """
        if self._reading is not None:
            self._read_again = True
            return
        self._retry = cancel_call(self._retry)
        reading = self._reading = self._swarm.statuses()
        reading.addCallbacks(self._everything_read, self._not_read)
        reading.addErrback(log_unless_cancelled, log, "re-reading the agents failed")
        reading.addBoth(self._read_done)

    def when_read(self) -> Deferred:
        """
        Fires once no read for every agent is under way (for tests and the bench).
        """
        return succeed(None) if self._reading is None else follow(self._reading)

    def _everything_read(self, statuses: dict[str, ServiceStatus]) -> None:
        unreconciled, self._unreconciled = self._unreconciled, []
        waiting = {id(agent) for agent in unreconciled}
        for agent in list(self._registry.values()):
            status = _status_of(agent, statuses)
            if id(agent) in waiting:
                self._start(agent, status, retry=True)
            else:
                agent.service_changed(status=status)

    def _not_read(self, failure) -> None:
        failure.trap(SwarmError)
        log.info("could not read the agents' services: {error}",
                 error=failure.getErrorMessage())
        self._schedule_retry()

    def _read_done(self, result) -> None:
        self._reading = None
        if self._read_again:
            self._read_again = False
            self.everything_changed()

    def _schedule_retry(self) -> None:
        if self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(RECONCILE_RETRY, self._retry_read)

    def _retry_read(self) -> None:
        self._retry = None
        self.everything_changed()


def _status_of(agent: Agent, statuses: dict[str, ServiceStatus]) -> ServiceStatus | SwarmError:
    status = statuses.get(agent.config.service)
    return status if status is not None else UnknownService(agent.config.service)
