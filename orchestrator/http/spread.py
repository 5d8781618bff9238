"""
Reaching a backend named by several addresses: Swarm's C{tasks.<service>}, one address
per running task. Connections are spread over the addresses in turn, an address that
failed to connect is avoided for a while, and a connection that fails is tried on the
next address, started early (a dead task's address on an overlay often times out rather
than refuses) so one dead task costs a request a fraction of a second, never the
request.

Why not L{twisted.internet.endpoints.HostnameEndpoint}: it always tries the addresses in
the resolver's order (so one task takes every connection when the resolver does not
rotate), and it hides which address failed, so a dead task is tried again each time.
Its staggered attempts are kept here; the rotation and the memory of failures are ours.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import IResolutionReceiver, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

#: Seconds an address that failed to connect is avoided while another remains.
AVOID_FOR = 5.0
#: Seconds after an attempt starts before the next address is tried beside it (as
#: HostnameEndpoint's C{attemptDelay}).
ATTEMPT_DELAY = 0.3


@implementer(IResolutionReceiver)
class _Addresses:
    """
    What one name resolution gave, as IP strings in the resolver's order.
    """

    def __init__(self) -> None:
        self.found: list[str] = []
        self.done: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolution) -> None:
        pass

    def addressResolved(self, address) -> None:
        if address.host not in self.found:
            self.found.append(address.host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.found)


@implementer(IStreamClientEndpoint)
class SpreadEndpoint:
    """
    Connects to one of the addresses C{host} resolves to at each connection (resolved
    anew each time, as Swarm's DNS answers change with its tasks), each in turn.

    @param reactor: with C{nameResolver}, C{connectTCP} and C{callLater}.
    @param timeout: seconds each address has to connect.
    """

    def __init__(self, reactor, host: str, port: int, timeout: float) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._timeout = timeout
        self._turn = 0
        #: Addresses that failed to connect -> until when they are avoided.
        self._avoided: dict[str, float] = {}

    @property
    def avoided(self) -> tuple[str, ...]:
        """
        The addresses avoided now (they failed to connect lately).
        """
        now = self._reactor.seconds()
        return tuple(sorted(ip for ip, until in self._avoided.items() if until > now))

    def connect(self, factory, avoid: frozenset[str] = frozenset()) -> Deferred:
        """
        Connect C{factory}'s protocol to one of the name's addresses; those in C{avoid}
        (its tasks Swarm says no longer run, which DNS may still give for a moment) only
        if none of the others connects.
        """
        receiver = _Addresses()
        try:
            self._reactor.nameResolver.resolveHostName(receiver, self._host, self._port,
                                                       (IPv4Address, IPv6Address), "TCP")
        except Exception:
            return fail()
        attempt = _Attempt(self, factory, avoid)
        receiver.done.addCallback(attempt.start)
        # Cancelling the connection cancels what it waits for: the lookup or the
        # attempts.
        connected: Deferred = Deferred(lambda _: attempt.cancel(receiver.done))
        attempt.result.chainDeferred(connected)
        receiver.done.addErrback(attempt.lookup_failed)
        return connected

    def order(self, found: list[str], avoid: frozenset[str] = frozenset()) -> list[str]:
        """
        The addresses to try, the next in turn first; those that failed lately or are
        in C{avoid} last (tried still if nothing else connects).
        """
        if not found:
            return []
        now = self._reactor.seconds()
        for ip in [ip for ip, until in self._avoided.items() if until <= now]:
            del self._avoided[ip]
        addresses = sorted(found)
        good = [ip for ip in addresses if ip not in self._avoided and ip not in avoid]
        # The turn goes over the good ones, so avoiding one does not send two turns in a
        # row to its neighbour.
        if good:
            self._turn = (self._turn + 1) % len(good)
            good = good[self._turn:] + good[:self._turn]
        return good + [ip for ip in addresses if ip not in good]

    def failed(self, ip: str) -> None:
        self._avoided[ip] = self._reactor.seconds() + AVOID_FOR

    def connected(self, ip: str) -> None:
        self._avoided.pop(ip, None)

    def endpoint(self, ip: str):
        kind = TCP6ClientEndpoint if ipaddress.ip_address(ip).version == 6 else TCP4ClientEndpoint
        return kind(self._reactor, ip, self._port, timeout=self._timeout)

    def __repr__(self) -> str:
        return f"<SpreadEndpoint {self._host}:{self._port}>"


@implementer(IStreamClientEndpoint)
class AvoidingEndpoint:
    """
    A L{SpreadEndpoint} as one agent's connections use it: avoiding the addresses that
    C{avoid()} says are down (its tasks Swarm shows no longer running) at each connection.
    """

    def __init__(self, endpoint: SpreadEndpoint, avoid: Callable[[], frozenset[str]]) -> None:
        self._endpoint = endpoint
        self._avoid = avoid

    def connect(self, factory) -> Deferred:
        return self._endpoint.connect(factory, self._avoid())


class _Attempt:
    """
    One connection: the addresses tried one after another, each started
    L{ATTEMPT_DELAY} after the previous unless it failed sooner; the first to connect
    wins and the others are cancelled.
    """

    def __init__(self, endpoint: SpreadEndpoint, factory, avoid: frozenset[str]) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._avoid = avoid
        self.result: Deferred = Deferred()
        self._pending: list[str] = []
        self._trying: dict[str, Deferred] = {}
        self._next = None
        self._last_failure: Failure | None = None
        self._cancelled = False

    def start(self, found: list[str]) -> None:
        if self._cancelled:
            return
        self._pending = self._endpoint.order(found, self._avoid)
        if not self._pending:
            self._finish(Failure(DNSLookupError(
                f"{self._endpoint._host} has no address (no task of the service runs?)")))
            return
        self._try_next()

    def lookup_failed(self, failure: Failure) -> None:
        if not self.result.called and not self._cancelled:
            self._finish(failure)

    def cancel(self, lookup: Deferred) -> None:
        self._cancelled = True
        if not lookup.called:
            lookup.cancel()
        self._stop_trying()
        if not self.result.called:
            self.result.errback(Failure(ConnectingCancelledError(self._endpoint)))

    def _try_next(self) -> None:
        self._next = None
        if not self._pending or self.result.called:
            return
        ip = self._pending.pop(0)
        trying = self._trying[ip] = self._endpoint.endpoint(ip).connect(self._factory)
        trying.addCallbacks(self._won, self._lost, callbackArgs=(ip,), errbackArgs=(ip,))
        if self._pending:
            self._next = self._endpoint._reactor.callLater(ATTEMPT_DELAY, self._try_next)

    def _won(self, protocol, ip: str):
        self._trying.pop(ip, None)
        self._endpoint.connected(ip)
        if self.result.called:
            protocol.transport.abortConnection()  # another won, or it was cancelled
            return None
        self._stop_trying()
        self.result.callback(protocol)
        return None

    def _lost(self, failure: Failure, ip: str) -> None:
        self._trying.pop(ip, None)
        if failure.check(CancelledError, ConnectingCancelledError):
            return None
        self._endpoint.failed(ip)
        self._last_failure = failure
        if self.result.called:
            return None
        if self._pending:
            if self._next is not None and self._next.active():
                self._next.cancel()
            self._try_next()
        elif not self._trying:
            self._finish(failure)
        return None

    def _stop_trying(self) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._pending = []
        for trying in list(self._trying.values()):
            trying.cancel()
        self._trying.clear()

    def _finish(self, failure: Failure) -> None:
        if not self.result.called:
            self.result.errback(failure)
