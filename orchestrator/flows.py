"""
Small mechanisms every flow needs, written once: following a Deferred without touching
its result, cancelling a timer that may already have run, logging a failure unless it
is a cancellation, and a capped exponential backoff.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure


def follow(deferred: Deferred) -> Deferred:
    """
    A new Deferred that fires with C{None} when C{deferred} fires (either way), leaving
    C{deferred}'s own result chain as it was: for a second party that only wants to
    know when a flow is over.
    """
    follower: Deferred = Deferred()

    def fired(result):
        follower.callback(None)
        return result

    deferred.addBoth(fired)
    return follower


def cancel_call(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} if it is still pending; return C{None}, so a timer attribute can be
    cleared in the same line: C{self._timer = cancel_call(self._timer)}.
    """
    if call is not None and call.active():
        call.cancel()


def log_unless_cancelled(failure: Failure, log: Logger, message: str, **fields) -> None:
    """
    An errback: log C{failure} with C{message}, unless it is a cancellation (a flow
    stopped on purpose, which is not an error).
    """
    if not failure.check(CancelledError):
        log.failure(message, failure, **fields)


def backoff_delay(attempt: int, first: float, most: float) -> float:
    """
    Seconds to wait before attempt number C{attempt} (0 for the first retry): C{first},
    doubled at each attempt, never more than C{most}.
    """
    return min(first * 2 ** min(max(attempt, 0), 32), most)


class Running:
    """
    The one run in progress of a flow's coroutine: kept while it runs (to follow it, or
    cancel it), forgotten when it ends, its failure logged with C{message} unless it is
    a cancellation.
    """

    def __init__(self, log: Logger, message: str, **fields) -> None:
        self._log = log
        self._message = message
        self._fields = fields
        self.deferred: Deferred | None = None

    @property
    def running(self) -> bool:
        return self.deferred is not None

    def start(self, coroutine) -> Deferred:
        """
        Run C{coroutine}; return a Deferred that fires (with C{None}) when it is over.
        """
        running = Deferred.fromCoroutine(coroutine)
        running.addErrback(log_unless_cancelled, self._log, self._message, **self._fields)
        if not running.called:
            self.deferred = running

            def finished(result):
                self.deferred = None
                return result

            running.addBoth(finished)
        return follow(running)

    def follow(self) -> Deferred:
        return follow(self.deferred) if self.deferred is not None else succeed(None)

    def cancel(self) -> None:
        if self.deferred is not None:
            self.deferred.cancel()
