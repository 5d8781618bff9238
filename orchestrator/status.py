"""
What an agent looks like from outside, as one frozen value: the health endpoint, the 503
and 502 bodies, the waiting page, the admin API and (later) metrics and the dashboard all
read an L{AgentStatus} rather than the runtime's attributes.
"""

from __future__ import annotations

from typing import Any

import attrs

from orchestrator.states import AgentState


@attrs.frozen
class WakeRecord:
    """
    One finished wake: when it began, how long it took, and its phases.
    """

    started: float
    seconds: float
    #: Seconds spent in each phase (C{queued}, C{scheduling}, C{probing}).
    phases: dict[str, float] = attrs.field(factory=dict)
    #: Whether it ended C{ready} (else C{degraded}).
    succeeded: bool = True


@attrs.frozen
class Lease:
    """
    One busy lease: who asked why, and until when it keeps the agent awake.
    """

    id: str
    reason: str
    acquired: float
    expires: float


@attrs.frozen
class AgentStatus:
    """
    A snapshot of one agent, taken at C{time}.
    """

    name: str
    state: AgentState
    #: Why the agent is degraded, in Swarm's or the probe's words (image names, registry
    #: addresses, node errors): for the admin API, events and logs. C{None} in every
    #: other state.
    reason: str | None = None
    #: Why, as the public may be told: the kind of failure, nothing of Swarm's text.
    public_reason: str | None = None
    #: Where a wake in progress is (C{queued}, C{scheduling}, C{probing}); else C{None}.
    phase: str | None = None
    #: Seconds the wake in progress should still take, once a wake has been measured.
    estimated_wait: float | None = None
    #: When the agent last had traffic (POSIX seconds on the injected clock).
    last_activity: float = 0.0
    #: Requests being relayed to the agent now.
    in_flight: int = 0
    #: Relayed connections (WebSockets) open to the agent now.
    connections: int = 0
    #: When the agent entered its current state.
    since: float = 0.0
    #: When idleness will put it to sleep if nothing happens (C{None}: it will not,
    #: being always-on, asleep, starting, or busy with requests in flight).
    sleeps_at: float | None = None
    #: The most recent wakes, oldest first.
    recent_wakes: tuple[WakeRecord, ...] = ()
    #: The busy leases that keep it awake, the first to end first.
    leases: tuple[Lease, ...] = ()
    #: When this snapshot was taken.
    time: float = 0.0

    def health_body(self) -> dict[str, Any]:
        """
        The agent's state as the admin API shows it: C{status} and C{agent} always;
        C{reason} (the detailed one) when degraded; C{phase} and C{estimated_wait} while
        starting, when known.
        """
        return self._body(self.reason)

    def public_body(self) -> dict[str, Any]:
        """
        The JSON body of C{/api/health} and of the proxy's 503 and 502 answers: as
        L{health_body}, with the public reason.
        """
        return self._body(self.public_reason)

    def _body(self, reason: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.state.value, "agent": self.name}
        if reason is not None:
            body["reason"] = reason
        if self.state is AgentState.STARTING:
            if self.phase is not None:
                body["phase"] = self.phase
            if self.estimated_wait is not None:
                body["estimated_wait"] = self.estimated_wait
        return body
