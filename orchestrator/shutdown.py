"""
The phased stop (SIGTERM): stop accepting, drain every open connection within the drain
timeout, stop watching Swarm, stop the agents' flows (never scaling anything), then stop
the workers (the Docker thread pool, the event consumers).

Twisted's C{MultiService} would stop its children at once and in reverse, and a
listening service only stops listening: open connections are ours to drain, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs
from twisted.application.service import IService
from twisted.internet.defer import DeferredList, gatherResults, maybeDeferred
from twisted.logger import Logger

from orchestrator.agents.drain import ConnectionRegistry

log = Logger()


@attrs.frozen
class StopPhases:
    """
    What to stop, in the order it is stopped.
    """

    #: Stopped first, together: nothing new is accepted.
    listeners: Sequence[IService]
    #: Lets long-polls and held requests answer now, with the state as it is.
    release_waiters: Callable[[], None]
    #: The connections to drain (the proxy's, each agent's), read when the drain starts.
    connections: Callable[[], Iterable[ConnectionRegistry]]
    #: Stopped once the connections are closed: the Swarm watcher, the agents.
    watchers: Sequence[IService]
    #: Stopped last, together: the Docker thread pool, the event consumers.
    workers: Sequence[IService]


async def stop_in_phases(phases: StopPhases, *, drain_timeout: float, clock) -> None:
    """
    Run the phases in order; returns when the last worker has stopped.
    """
    await _stop_together(phases.listeners)
    phases.release_waiters()
    registries = list(phases.connections())
    open_count = sum(len(registry) for registry in registries)
    if open_count:
        log.info("draining {count} open connections (up to {timeout:g}s)",
                 count=open_count, timeout=drain_timeout)
    results = await DeferredList([registry.drain(drain_timeout, clock) for registry in registries])
    aborted = sum(result for ok, result in results if ok)
    if aborted:
        log.warn("aborted {count} connections still open after {timeout:g}s",
                 count=aborted, timeout=drain_timeout)
    for watcher in phases.watchers:
        await maybeDeferred(watcher.stopService)
    await _stop_together(phases.workers)


def _stop_together(services: Iterable[IService]):
    return gatherResults([maybeDeferred(service.stopService) for service in services
                          if service.running])
