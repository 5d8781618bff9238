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


#: The reason a starting agent's health body gives while its wake waits for room on the
#: host (L{orchestrator.agents.capacity}): the waiting page says so.
CAPACITY = "capacity"


@attrs.frozen
class AgentStatus:
    """
    A snapshot of one agent, taken at C{time}.
    """

    name: str
    state: AgentState
    #: Why the agent is degraded, in Swarm's or the probe's words (image names, registry
    #: addresses, node errors), or L{CAPACITY} while its wake waits for room: for the
    #: admin API, events and logs. C{None} otherwise.
    reason: str | None = None
    #: Why, as the public may be told: the kind of failure (nothing of Swarm's text), or
    #: L{CAPACITY}.
    public_reason: str | None = None
    #: Where a wake in progress is (C{queued} for a wake slot, C{capacity} waiting for
    #: room, C{evicting} while others are put to sleep for it, C{scheduling},
    #: C{probing}); else C{None}.
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
        C{reason} (the detailed one) when degraded, and C{"capacity"} while a wake waits
        for room; C{phase} and C{estimated_wait} while starting, when known.
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


@attrs.frozen
class WaitingWake:
    """
    A wake waiting for room on the host.
    """

    agent: str
    #: When it asked.
    since: float
    #: C{capacity}: nobody may be evicted now; C{evicting}: others are being put to
    #: sleep for it.
    waiting_for: str


@attrs.frozen
class CapacityStatus:
    """
    The host's budget, its use and the wakes waiting for room, at C{time}: what the
    admin API, metrics and the dashboard show (L{orchestrator.agents.capacity}).
    """

    #: Agents awake at once; C{None}: no limit.
    max_awake: int | None = None
    #: Bytes the awake agents may cost; C{None}: no limit (or a share of a node whose
    #: memory is not known yet).
    memory: int | None = None
    #: When the budget is a share of the node's memory, that share.
    memory_share: float | None = None
    #: The node's memory, once read (for a share).
    node_memory: int | None = None
    #: Agents holding room now, always-on ones included.
    awake: int = 0
    #: What they cost, in bytes.
    memory_used: int = 0
    #: The wakes waiting for room, the first to have asked first.
    waiting: tuple[WaitingWake, ...] = ()
    #: Agents being put to sleep to make room.
    evicting: tuple[str, ...] = ()
    #: The most wakes that may wait.
    max_queued: int = 0
    time: float = 0.0
