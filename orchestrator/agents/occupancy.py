"""
One agent in the books of the host's budget (L{orchestrator.agents.capacity}): whether
it holds room (a task runs, or may run, for it), since when, and what it costs. It hears
the agent's core as a flow does and tells the books when room may have changed; an
eviction is the agent's own sleep flow's (the C{evict} it is given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed

from orchestrator.agents.core import AgentCore, Cause, FlowBase
from orchestrator.agents.slot import FlowKind
from orchestrator.config.model import Policy
from orchestrator.policy.capacity import Occupant, agent_cost
from orchestrator.states import AgentState

if TYPE_CHECKING:
    from orchestrator.agents.capacity import Capacity


class Occupancy(FlowBase):
    """
    One agent in the books: whether it holds room, since when, and what it costs. It
    hears the agent's core as a flow does, and tells the books when room may have
    changed.
    """

    def __init__(self, capacity: Capacity, core: AgentCore,
                 evict: Callable[[], Deferred]) -> None:
        self._capacity = capacity
        self._core = core
        self._evict = evict
        self.name = core.name
        #: A task runs, or may run, for the agent.
        self.holding = False
        self.awake_since: float | None = None

    @property
    def cost(self) -> int:
        core = self._core
        # Each of its tasks reserves as much.
        return core.wanted_replicas * agent_cost(
            reservation=core.memory_reservation, limit=core.memory_limit,
            configured=core.config.memory, default=self._capacity.limits.default_memory)

    def occupant(self, now: float) -> Occupant:
        core = self._core
        return Occupant(
            name=self.name, cost=self.cost,
            always_on=core.config.policy is Policy.ALWAYS_ON,
            awake=self.holding,
            leaving=(self._capacity.is_evicting(self.name)
                     or core.slot.flow in (FlowKind.DRAINING, FlowKind.SCALING_DOWN)),
            state=core.state,
            last_activity=core.last_activity,
            in_flight=core.in_flight,
            last_frame=core.last_frame,
            leased_until=core.leased_until,
            awake_since=self.awake_since,
            evictable=not self._capacity.cooling(self.name, now),
        )

    def granted(self) -> None:
        """
        Its wake was given room: it holds it from now on.
        """
        self._hold(True)

    def evict(self) -> Deferred:
        """
        Put the agent to sleep for another; fires with whether it is asleep.
        """
        if self._core.stopped:
            return succeed(False)
        return self._evict()

    def idle(self) -> None:
        """
        Its last request in flight finished.
        """
        self._capacity.changed()

    def _hold(self, holding: bool) -> None:
        if holding and not self.holding:
            self.awake_since = self._core.clock.seconds()
        elif not holding:
            self.awake_since = None
        self.holding = holding

    # What it hears --------------------------------------------------------------------

    def settled(self, state: AgentState) -> None:
        # Found at start: a task runs, or may (always-on agents are Swarm's to run).
        self._hold(state in (AgentState.STARTING, AgentState.READY)
                   or self._core.backend_running)
        self._capacity.changed()

    def transitioned(self, old: AgentState, new: AgentState) -> None:
        if new is AgentState.READY:
            self._hold(True)
        self._capacity.changed()

    def flow_ended(self, kind: FlowKind) -> None:
        core = self._core
        # A sleep's scale-down is done, or a failed wake scaled the agent back to 0 (a
        # scale-down that Swarm refused leaves the task running: it still holds room).
        released = core.state is AgentState.SLEEPING or (
            core.state is AgentState.DEGRADED and not core.backend_running
            and core.cause is not Cause.SCALE_DOWN)
        if released and core.config.policy is Policy.ON_DEMAND:
            self._hold(False)
        self._capacity.changed()

    def leases_changed(self) -> None:
        self._capacity.changed()

    def stop(self) -> None:
        self._capacity.leave(self)

