"""
An agent's busy leases at run time: the frozen L{Leases} of the policy, one timer for
the next expiry (none without leases), the events, and the end of every lease when the
agent sleeps.
"""

from __future__ import annotations

import secrets

from orchestrator.agents.core import AgentCore, FlowBase
from orchestrator.flows import cancel_call
from orchestrator.policy.leases import LeaseError, Leases
from orchestrator.states import AgentState
from orchestrator.status import Lease


class AgentAsleep(LeaseError):
    """
    A sleeping agent cannot hold a lease (whoever asked is not one of its tasks).
    """


class LeaseKeeper(FlowBase):
    """
    The leases of one agent. The core's C{leased_until} says until when they keep it
    awake; the idle sleep reads it.
    """

    def __init__(self, core: AgentCore) -> None:
        self._core = core
        self._leases = Leases()
        self._timer = None

    @property
    def leases(self) -> Leases:
        return self._leases

    def acquire(self, *, seconds: float, reason: str) -> Lease:
        """
        A new lease of C{seconds} (at most C{idle.max_lease}).

        @raise AgentAsleep: if the agent sleeps.
        @raise orchestrator.policy.leases.TooManyLeases: over C{registration.max_leases}.
        """
        core = self._core
        if core.state is AgentState.SLEEPING:
            raise AgentAsleep(f"agent {core.name} is asleep")
        config = core.config
        leases, lease = self._leases.acquire(
            secrets.token_urlsafe(12), reason=reason, seconds=seconds, now=core.clock.seconds(),
            cap=config.idle.max_lease, limit=config.registration.max_leases)
        self._take(leases)
        core.emit("agent.lease_acquired", lease=lease.id, reason=lease.reason,
                  seconds=round(lease.expires - lease.acquired, 3), expires=lease.expires)
        return lease

    def renew(self, lease_id: str, *, seconds: float) -> Lease:
        """
        Extend a lease (never shortening it).

        @raise orchestrator.policy.leases.UnknownLease: if it is not one of these.
        """
        core = self._core
        leases, lease = self._leases.renew(lease_id, seconds=seconds, now=core.clock.seconds(),
                                           cap=core.config.idle.max_lease)
        self._take(leases)
        core.emit("agent.lease_renewed", lease=lease.id, reason=lease.reason,
                  expires=lease.expires)
        return lease

    def release(self, lease_id: str, why: str = "released") -> Lease:
        """
        End a lease now.

        @raise orchestrator.policy.leases.UnknownLease: if it is not one of these.
        """
        leases, lease = self._leases.release(lease_id)
        self._take(leases)
        self._core.emit("agent.lease_released", lease=lease.id, reason=lease.reason, why=why)
        return lease

    def restore(self, leases: list[Lease]) -> None:
        """
        Take up leases kept across a restart (those that ended meanwhile end now).
        """
        by_id = {lease.id: lease for lease in self._leases}
        by_id.update((lease.id, lease) for lease in leases)
        self._take(Leases(by_id))
        self._expire()

    # What it hears --------------------------------------------------------------------

    def transitioned(self, old: AgentState, new: AgentState) -> None:
        if new is AgentState.SLEEPING:
            for lease in list(self._leases):
                self.release(lease.id, why="the agent slept")

    def settled(self, state: AgentState) -> None:
        self.transitioned(state, state)

    def stop(self) -> None:
        self._timer = cancel_call(self._timer)

    # Timers ---------------------------------------------------------------------------

    def _take(self, leases: Leases) -> None:
        core = self._core
        self._leases = leases
        core.leased_until = leases.until
        cancel_call(self._timer)
        expiry = leases.next_expiry
        self._timer = None if expiry is None else core.clock.callLater(
            max(expiry - core.clock.seconds(), 0), self._expire)
        core.report_leases_changed()

    def _expire(self) -> None:
        leases, ended = self._leases.expire(self._core.clock.seconds())
        if not ended:
            return
        self._take(leases)
        for lease in ended:
            self._core.emit("agent.lease_expired", lease=lease.id, reason=lease.reason)
