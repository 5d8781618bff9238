"""
Putting an idle on-demand agent to sleep: an idle timer, the drain of its open
connections (activity meanwhile calls the sleep off), then the scale-down to 0.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from orchestrator.agents.core import AgentCore, Cause, FlowBase
from orchestrator.agents.drain import ConnectionRegistry
from orchestrator.agents.slot import FlowKind
from orchestrator.config.model import AgentConfig
from orchestrator.flows import Running, cancel_call, log_unless_cancelled
from orchestrator.http.client import BackendPool
from orchestrator.policy.idle import idle_deadline, sleeps_when_idle
from orchestrator.states import AgentState
from orchestrator.swarm.values import SwarmError

log = Logger()


class Sleeping(FlowBase):
    """
    The idle sleep of one agent.

    @param pool: the agent's keep-alive connections to its backend, closed when it
        sleeps, so that no request is ever sent to a task that is gone.
    @param connections: its relayed connections, drained before it sleeps.
    """

    def __init__(self, core: AgentCore, *, swarm, pool: BackendPool,
                 connections: ConnectionRegistry) -> None:
        self._core = core
        self._swarm = swarm
        self._pool = pool
        self._connections = connections
        self._timer = None
        self._sleeping = Running(log, "sleep of {agent} failed", agent=core.name)

    # What it hears --------------------------------------------------------------------

    def transitioned(self, old: AgentState, new: AgentState) -> None:
        if new is AgentState.SLEEPING:
            self._timer = cancel_call(self._timer)
            closed = self._pool.close_idle()
            closed.addErrback(log_unless_cancelled, log,
                              "closing connections to {agent} failed", agent=self._core.name)
        elif new is AgentState.READY:
            self._schedule(self._core.last_activity + self._core.config.idle.timeout)
        elif not self._may_sleep():
            self._timer = cancel_call(self._timer)

    def leases_changed(self) -> None:
        # A lease may end sooner than the timer was set for, or later: look again.
        if self._timer is not None or self._may_sleep():
            self._schedule(self._core.last_activity + self._core.config.idle.timeout)

    def reconfigured(self, old: AgentConfig) -> None:
        core = self._core
        if core.config.backend != old.backend:
            self._pool.close_idle()
        if self._timer is not None:
            self._schedule(core.last_activity + core.config.idle.timeout)

    def stop(self) -> None:
        self._timer = cancel_call(self._timer)
        self._sleeping.cancel()

    def sleeps_at(self) -> float | None:
        """
        When idleness puts the agent to sleep if nothing happens, or C{None} if it will
        not (not an agent that sleeps, or requests are in flight).
        """
        core = self._core
        if not self._may_sleep() or core.in_flight:
            return None
        return max(core.last_activity + core.config.idle.timeout, core.leased_until or 0.0)

    def sleep(self, reason: str) -> Deferred:
        """
        Drain the agent and scale it to 0 now, whatever its activity (an operator's
        order); after a wake in progress, if there is one. Fires once it is asleep, or
        could not be put to sleep; never fails.
        """
        if self._sleeping.running:
            return self._sleeping.follow()
        if self._core.state is AgentState.SLEEPING or self._core.stopped:
            return succeed(None)
        return self._sleeping.start(self._sleep(reason=reason))

    # The idle timer -------------------------------------------------------------------

    def _may_sleep(self) -> bool:
        core = self._core
        return sleeps_when_idle(policy=core.config.policy, state=core.state,
                                backend_running=core.backend_running)

    def _schedule(self, when: float) -> None:
        if not self._may_sleep():
            return
        cancel_call(self._timer)
        delay = max(when - self._core.clock.seconds(), 0)
        self._timer = self._core.clock.callLater(delay, self._idle_check)

    def _idle_check(self) -> None:
        self._timer = None
        core = self._core
        if not self._may_sleep():
            return
        when = idle_deadline(last_activity=core.last_activity, in_flight=core.in_flight,
                             timeout=core.config.idle.timeout, now=core.clock.seconds(),
                             leased_until=core.leased_until)
        if when is not None:
            self._schedule(when)
            return
        self._sleeping.start(self._sleep(reason=None))

    # The flow -------------------------------------------------------------------------

    async def _sleep(self, reason: str | None) -> None:
        """
        Idle (C{reason} C{None}): activity during the drain calls the sleep off. Ordered
        (a C{reason}): nothing does.
        """
        core = self._core
        flow = await core.slot.acquire(FlowKind.DRAINING)
        try:
            if reason is not None and core.state not in (AgentState.READY,
                                                         AgentState.DEGRADED):
                return  # asleep already, or never reconciled: nothing to put to sleep
            drain_started = core.clock.seconds()
            idle_for = drain_started - core.last_activity
            aborted = await self._connections.drain(core.config.idle.drain_timeout,
                                                    core.clock)
            if not flow.active:
                return
            leased = (core.leased_until or 0.0) > core.clock.seconds()
            if reason is None and (core.last_activity >= drain_started or leased or
                                   not self._may_sleep()):
                log.info("activity during the drain of {agent}: staying awake",
                         agent=core.name)
                self._schedule(core.last_activity + core.config.idle.timeout)
                return
            core.backend_running = False
            core.transition(AgentState.SLEEPING, reason=reason or "idle",
                            idle_seconds=round(idle_for, 3), aborted_connections=aborted)
            flow.become(FlowKind.SCALING_DOWN)
            try:
                await self._swarm.scale(core.config.service, 0)
            except SwarmError as failure:
                if flow.active:
                    core.wake_allowed_at = core.clock.seconds()
                    core.transition(AgentState.DEGRADED, cause=Cause.SCALE_DOWN,
                                    reason=f"could not scale to 0: {failure}")
        finally:
            core.slot.end(flow)
