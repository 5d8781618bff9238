"""
Tracking open connections so they can be drained: asked to finish, then cut after a
timeout. Used when an agent goes to sleep and when the orchestrator shuts down.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface


class IDrainable(Interface):
    """
    An open connection that can be asked to finish and, failing that, be cut.
    """

    def go_away() -> None:  # type: ignore[misc]
        """
        Ask the connection to finish what it is doing and close (a WebSocket gets a
        close 1001; an HTTP connection closes after its current response).
        """

    def abort() -> None:  # type: ignore[misc]
        """
        Close the connection now.
        """


class ConnectionRegistry:
    """
    The open connections of one agent (or of one listener). Connections add themselves
    when they open and discard themselves when they close.
    """

    def __init__(self) -> None:
        self._open: set = set()
        self._empty_waiters: list[Deferred] = []

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self):
        return iter(list(self._open))

    def add(self, connection) -> None:
        self._open.add(connection)

    def discard(self, connection) -> None:
        self._open.discard(connection)
        if not self._open:
            waiters, self._empty_waiters = self._empty_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def when_empty(self) -> Deferred:
        """
        A Deferred that fires once no connection is open.
        """
        if not self._open:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._empty_waiters.append(waiter)
        return waiter

    def drain(self, timeout: float, clock) -> Deferred:
        """
        Ask every open connection to go away; abort those still open after C{timeout}
        seconds. Fires with the number of connections that had to be aborted.
        """
        for connection in self:
            connection.go_away()
        done: Deferred = Deferred()
        empty = self.when_empty()
        aborted = []

        def expire() -> None:
            aborted.extend(self)
            for connection in aborted:
                connection.abort()
            # Aborting closes them, which normally empties the registry at once; never
            # leave the caller waiting on a connection that failed to report its close.
            for connection in aborted:
                self.discard(connection)

        timer = clock.callLater(timeout, expire)

        def emptied(_):
            if timer.active():
                timer.cancel()
            done.callback(len(aborted))

        empty.addCallback(emptied)
        return done
