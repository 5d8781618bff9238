"""
The busy lease: an agent at work without inbound traffic (a long tool call, waiting on a
model) asks to be kept awake for a while. Several leases per agent, each capped and
expiring by itself; a renewal never shortens one.

L{Leases} is a frozen value: every change returns a new one, so the rules can be tested
(and reasoned about) apart from the timers that apply them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import attrs

from orchestrator.status import Lease


class LeaseError(Exception):
    """
    A lease cannot be acquired, renewed or released as asked.
    """


class UnknownLease(LeaseError):
    def __init__(self, lease_id: str) -> None:
        super().__init__(f"no lease {lease_id!r}")
        self.lease_id = lease_id


class TooManyLeases(LeaseError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the agent holds {limit} leases, the most allowed: release one first")
        self.limit = limit


@attrs.frozen
class Leases:
    """
    An agent's leases, by id.
    """

    _by_id: Mapping[str, Lease] = attrs.field(factory=dict, alias="by_id")

    def __iter__(self) -> Iterator[Lease]:
        return iter(sorted(self._by_id.values(), key=lambda lease: (lease.expires, lease.id)))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, lease_id: str) -> Lease:
        try:
            return self._by_id[lease_id]
        except KeyError:
            raise UnknownLease(lease_id) from None

    @property
    def until(self) -> float | None:
        """
        When the last lease ends: the agent is kept awake until then. C{None}: no lease.
        """
        return max((lease.expires for lease in self._by_id.values()), default=None)

    @property
    def next_expiry(self) -> float | None:
        """
        When the first lease ends (when to look again).
        """
        return min((lease.expires for lease in self._by_id.values()), default=None)

    def acquire(self, lease_id: str, *, reason: str, seconds: float, now: float, cap: float,
                limit: int) -> tuple[Leases, Lease]:
        """
        A new lease of C{seconds} from C{now}, but never longer than C{cap}.

        @raise TooManyLeases: if C{limit} leases are held already.
        """
        if len(self._by_id) >= limit:
            raise TooManyLeases(limit)
        lease = Lease(lease_id, reason, now, now + min(seconds, cap))
        return Leases({**self._by_id, lease_id: lease}), lease

    def renew(self, lease_id: str, *, seconds: float, now: float,
              cap: float) -> tuple[Leases, Lease]:
        """
        Extend a lease to C{seconds} from C{now} (at most C{cap}); a renewal never
        shortens it, so a short keep-alive cannot cut a long lease by accident.

        @raise UnknownLease: if there is no such lease (it ended, or never was).
        """
        old = self.get(lease_id)
        lease = attrs.evolve(old, expires=max(old.expires, now + min(seconds, cap)))
        return Leases({**self._by_id, lease_id: lease}), lease

    def release(self, lease_id: str) -> tuple[Leases, Lease]:
        """
        End a lease now.

        @raise UnknownLease: if there is no such lease.
        """
        lease = self.get(lease_id)
        rest = {key: value for key, value in self._by_id.items() if key != lease_id}
        return Leases(rest), lease

    def expire(self, now: float) -> tuple[Leases, tuple[Lease, ...]]:
        """
        The leases still live at C{now}, and those that ended (oldest end first).
        """
        ended = tuple(lease for lease in self if lease.expires <= now)
        if not ended:
            return self, ()
        return Leases({key: value for key, value in self._by_id.items()
                       if value.expires > now}), ended
