"""
The core of one agent: its state and the one writer of its transitions, its activity,
the waiters for its state to settle, and the one slot for the flow in progress
(L{orchestrator.agents.slot}).

The flows (waking, sleeping, health, Swarm sync, leases) each get the core and nothing
else of one another: they change the agent only through the core, and they learn what
the others did from the core's notifications (L{IAgentFlow}). So no flow calls another,
and which flow may run is decided in one place, the slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from orchestrator.agents.slot import FlowKind, FlowSlot
from orchestrator.config.model import AgentConfig, Policy
from orchestrator.events.bus import EventBus
from orchestrator.states import AgentState, transition_event
from orchestrator.status import CAPACITY, AgentStatus
from orchestrator.swarm.values import ServiceStatus, SwarmEvent


class Cause(Enum):
    """
    Why a degraded agent is degraded, which says what may end it.
    """

    #: What Swarm shows of the service (none, or scaled to 0 behind our back, or the
    #: engine unreachable): Swarm's news ends it, or a passing probe.
    SWARM = "swarm"
    #: Swarm shows no task of the service running: Swarm's news ends it, not a passing
    #: probe (a task being drained still answers for a moment).
    TASKS = "tasks"
    #: Swarm shows fewer of its replicas running than it asks for (it still serves on
    #: those): Swarm's news ends it, not a passing probe (the replicas that run answer).
    REPLICAS = "replicas"
    #: A wake failed and the service was scaled back to 0: a request after
    #: C{wake_retry} tries again.
    WAKE_FAILED = "wake_failed"
    #: Health probes fail while a task runs: a passing probe ends it.
    HEALTH = "health"
    #: The scale-down after an idle sleep failed: the next request wakes it again.
    SCALE_DOWN = "scale_down"


#: What the public is told of each cause (Swarm's own words stay in the admin API,
#: the events and the logs: they name images, registries and nodes).
PUBLIC_REASONS = {
    Cause.SWARM: "the agent's service has no running task",
    Cause.WAKE_FAILED: "a wake failed",
    Cause.HEALTH: "the agent's health checks fail",
    Cause.SCALE_DOWN: "a scale-down failed",
    Cause.TASKS: "the agent's service has no running task",
    Cause.REPLICAS: "fewer of the agent's replicas run than it asks for",
}


class IAgentFlow(Interface):
    """
    What a flow hears from the core about the others. Each is called on every flow, in
    the order they were added, after the core has changed.
    """

    def transitioned(old: AgentState, new: AgentState) -> None:  # type: ignore[misc]
        """
        The agent went from C{old} to C{new} (an event was emitted).
        """

    def settled(state: AgentState) -> None:  # type: ignore[misc]
        """
        Reconciliation found the agent in C{state} (not a transition: nothing happened).
        """

    def swarm_news(events: tuple[SwarmEvent, ...]) -> None:  # type: ignore[misc]
        """
        Swarm reported news about the agent's service (none after a reconnect).
        """

    def probe_failed() -> None:  # type: ignore[misc]
        """
        A health probe failed: whoever reads Swarm should look again.
        """

    def leases_changed() -> None:  # type: ignore[misc]
        """
        A lease was acquired, renewed, released or ended: C{leased_until} changed.
        """

    def flow_ended(kind: FlowKind) -> None:  # type: ignore[misc]
        """
        The flow that held the slot ended (a wake, a sleep with its scale-down, a
        re-read): what it moved is done, and the slot is free (a flow waiting for it
        takes it next).
        """

    def reconfigured(old: AgentConfig) -> None:  # type: ignore[misc]
        """
        The configuration changed (a reload); the core already holds the new one.
        """

    def stop() -> None:  # type: ignore[misc]
        """
        The agent stops: cancel every timer and Deferred. Never scale anything.
        """


@implementer(IAgentFlow)
class FlowBase:
    """
    An L{IAgentFlow} that ignores everything; flows override what concerns them.
    """

    def transitioned(self, old: AgentState, new: AgentState) -> None:
        pass

    def settled(self, state: AgentState) -> None:
        pass

    def swarm_news(self, events: tuple[SwarmEvent, ...]) -> None:
        pass

    def probe_failed(self) -> None:
        pass

    def leases_changed(self) -> None:
        pass

    def flow_ended(self, kind: FlowKind) -> None:
        pass

    def reconfigured(self, old: AgentConfig) -> None:
        pass

    def stop(self) -> None:
        pass


class AgentCore:
    """
    One agent's state, activity, waiters and flow slot.

    @ivar backend_running: whether a task is believed to run, i.e. whether a request can
        be forwarded although the agent is not C{ready}.
    @ivar wake_allowed_at: when a degraded on-demand agent may be woken again.
    @ivar last_activity: when the agent last had traffic.
    @ivar in_flight: requests being relayed to it now.
    @ivar leased_until: when its last busy lease ends (L{orchestrator.agents.leases}).
    @ivar last_frame: when a WebSocket frame was last relayed to or from it, if ever.
    @ivar memory_reservation: the bytes each task of its service reserves, as Swarm last
        showed (0: none, or never read).
    @ivar memory_limit: the bytes each task may use at most, as Swarm last showed.
    @ivar stopped: set by L{stop}: no flow goes on.
    """

    def __init__(self, config: AgentConfig, *, bus: EventBus, clock) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self._bus = bus
        # Until Swarm has been asked, the agent is "starting": requests get the usual 503.
        self._state = AgentState.STARTING
        self._reason: str | None = None
        self._cause: Cause | None = None
        self._phase: str | None = None
        self.backend_running = config.policy is Policy.ALWAYS_ON
        self.wake_allowed_at = 0.0
        self.last_activity = clock.seconds()
        self.in_flight = 0
        self.leased_until: float | None = None
        self.last_frame: float | None = None
        self.memory_reservation = 0
        self.memory_limit = 0
        #: The replicas an always-on agent's service asks for, as Swarm last showed
        #: (C{None}: global, or never read).
        self.service_replicas: int | None = None
        #: Addresses of its tasks that no longer run, as Swarm last showed.
        self.down_addresses: frozenset[str] = frozenset()
        #: The nodes its live tasks are on, as Swarm last showed (empty: none live).
        self.task_nodes: frozenset[str] = frozenset()
        self.since = clock.seconds()
        self.stopped = False
        #: The one slot for the flow in progress (L{orchestrator.agents.slot}).
        self.slot = FlowSlot(ended=self._flow_ended)
        self._settled_waiters: list[Deferred] = []
        self._flows: list[IAgentFlow] = []

    def add_flow(self, flow: IAgentFlow) -> None:
        self._flows.append(flow)

    # What it is ------------------------------------------------------------------------

    @property
    def state(self) -> AgentState:
        return self._state

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def cause(self) -> Cause | None:
        return self._cause

    @property
    def phase(self) -> str | None:
        return self._phase

    def status(self, **extra: Any) -> AgentStatus:
        """
        A snapshot; C{extra} adds what the core does not know (open connections, the
        wake's estimate).
        """
        reason = self._reason
        if reason is None and self._phase == CAPACITY:
            reason = CAPACITY  # the wake waits for room: the client is told why
        return AgentStatus(
            name=self.name, state=self._state, reason=reason,
            public_reason=(reason if self._reason is None else
                           PUBLIC_REASONS.get(self._cause, "the agent is unavailable")),
            phase=self._phase,
            last_activity=self.last_activity, in_flight=self.in_flight, since=self.since,
            time=self.clock.seconds(), **extra,
        )

    # Changing it: the only writers -----------------------------------------------------

    def transition(self, new: AgentState, cause: Cause | None = None, **fields: Any) -> None:
        """
        Move to C{new}, emitting the event the state table names for it; a move to the
        state it is in does nothing. C{cause} (with a C{reason} field) says why, when
        C{new} is C{degraded}.

        @raise orchestrator.states.InvalidTransition: if the table does not allow it.
        """
        old = self._state
        if old is new:
            return
        event_type = transition_event(self.name, old, new)
        self._state = new
        self.since = self.clock.seconds()
        degraded = new is AgentState.DEGRADED
        self._reason = fields.get("reason") if degraded else None
        self._cause = cause if degraded else None
        self._bus.emit(event_type, self.name, previous=old.value, state=new.value, **fields)
        if new in (AgentState.READY, AgentState.DEGRADED):
            self.release_waiters()
        for flow in list(self._flows):
            flow.transitioned(old, new)

    def became_ready(self, **fields: Any) -> None:
        """
        A task runs and answered its probe: C{ready}, its idle clock starting now.
        """
        self.backend_running = True
        self.last_activity = self.clock.seconds()
        self.transition(AgentState.READY, **fields)

    def degrade(self, reason: str, cause: Cause) -> None:
        """
        Be C{degraded} for C{reason}; already degraded, take up the new reason and cause
        (no second event).
        """
        if self._state is AgentState.DEGRADED:
            self._reason, self._cause = reason, cause
        else:
            self.transition(AgentState.DEGRADED, cause=cause, reason=reason)

    def settle(self, state: AgentState, reason: str | None = None) -> None:
        """
        Take up the state found at reconciliation (not a transition: nothing happened).
        Becoming C{degraded} is announced once: not again if the event stream's own
        re-read got there first.
        """
        was = self._state
        self._state = state
        self.since = self.clock.seconds()
        self._reason = reason
        self._cause = Cause.SWARM if state is AgentState.DEGRADED else None
        self._bus.emit("agent.reconciled", self.name, state=state.value,
                       **({"reason": reason} if reason else {}))
        if state is AgentState.DEGRADED and was is not AgentState.DEGRADED:
            self._bus.emit("agent.degraded", self.name, reason=reason)
        if state in (AgentState.READY, AgentState.DEGRADED):
            self.release_waiters()
        for flow in list(self._flows):
            flow.settled(state)

    def set_phase(self, phase: str | None) -> None:
        self._phase = phase

    def saw_service(self, status: ServiceStatus) -> None:
        """
        Remember what Swarm showed of the service that says what the agent costs.
        """
        self.memory_reservation = status.memory_reservation
        self.memory_limit = status.memory_limit
        self.service_replicas = status.replicas
        self.task_nodes = frozenset(task.node_id for task in status.tasks if task.live)
        running = {ip for task in status.running_tasks for ip in task.ips}
        self.down_addresses = frozenset(
            ip for task in status.tasks if not (task.running and task.desired_state == "running")
            for ip in task.ips) - running

    @property
    def wanted_replicas(self) -> int:
        """
        How many tasks the agent runs when awake: an on-demand agent's C{replicas}, an
        always-on agent's service's own (one for a global service or one never read).
        """
        if self.config.policy is Policy.ALWAYS_ON:
            return max(self.service_replicas or 1, 1)
        return self.config.replicas

    def emit(self, event_type: str, **fields: Any) -> None:
        """
        Publish an event about this agent that is not a transition.
        """
        self._bus.emit(event_type, self.name, **fields)

    # What others report ----------------------------------------------------------------

    def report_swarm_news(self, events: Iterable[SwarmEvent] = ()) -> None:
        if self.stopped:
            return
        news = tuple(events)
        for flow in list(self._flows):
            flow.swarm_news(news)

    def report_probe_failed(self) -> None:
        for flow in list(self._flows):
            flow.probe_failed()

    def report_leases_changed(self) -> None:
        for flow in list(self._flows):
            flow.leases_changed()

    def reconfigure(self, config: AgentConfig) -> None:
        old, self.config = self.config, config
        for flow in list(self._flows):
            flow.reconfigured(old)

    def stop(self) -> None:
        """
        Stop every flow and timer. Never scales anything: shutdown leaves agents as they
        are, and the next start reconciles.
        """
        self.stopped = True
        self.slot.stop()
        for flow in list(self._flows):
            flow.stop()

    def _flow_ended(self, kind: FlowKind) -> None:
        for flow in list(self._flows):
            flow.flow_ended(kind)

    # Waiters ---------------------------------------------------------------------------

    def when_settled(self) -> Deferred:
        """
        A Deferred that fires once the agent is C{ready} or C{degraded} (at once if it
        is), or when L{release_waiters} lets every waiter go (shutdown). Cancel it to
        stop waiting.
        """
        if self._state in (AgentState.READY, AgentState.DEGRADED):
            return succeed(self._state)

        def forget(waiter: Deferred) -> None:
            if waiter in self._settled_waiters:
                self._settled_waiters.remove(waiter)

        waiter: Deferred = Deferred(forget)
        self._settled_waiters.append(waiter)
        return waiter

    @property
    def waiter_count(self) -> int:
        """
        How many are waiting for the agent to settle (long-polls, held requests).
        """
        return len(self._settled_waiters)

    def release_waiters(self) -> None:
        waiters, self._settled_waiters = self._settled_waiters, []
        for waiter in waiters:
            waiter.callback(self._state)
