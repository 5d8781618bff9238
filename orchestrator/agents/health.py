"""
The health loop of an awake agent: a probe every C{health.interval}; C{health.failures}
failures in a row make it C{degraded}, a passing probe makes it C{ready} again. A failed
probe also has Swarm read again (polling is the safety net under Swarm's events).

Each agent probes on a phase of its own within the interval
(L{orchestrator.policy.probes}), so agents woken or found awake together are probed
apart. A sleeping agent has no loop and no timer.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from orchestrator.agents.core import AgentCore, Cause, FlowBase
from orchestrator.config.model import AgentConfig, Policy
from orchestrator.flows import cancel_call, follow, log_unless_cancelled
from orchestrator.policy.probes import next_probe
from orchestrator.states import AgentState

log = Logger()


class HealthWatch(FlowBase):
    """
    The health loop of one agent: running from its first C{ready} (an always-on agent:
    from its start) until it sleeps.
    """

    def __init__(self, core: AgentCore, *, prober) -> None:
        self._core = core
        self._prober = prober
        self._failures = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = core.clock
        #: The timer that starts the loop on the agent's phase.
        self._starter = None
        self._checking: Deferred | None = None
        #: Bumped each time the loop starts or stops: a probe answer from an earlier run
        #: of the loop (the agent slept meanwhile) is not news.
        self._round = 0

    # What it hears --------------------------------------------------------------------

    def transitioned(self, old: AgentState, new: AgentState) -> None:
        if new is AgentState.READY:
            self._failures = 0
            self._start(now=False)
        elif new is AgentState.SLEEPING:
            self._stop()

    def settled(self, state: AgentState) -> None:
        if self._core.config.policy is Policy.ALWAYS_ON:
            self._start(now=True)

    def reconfigured(self, old: AgentConfig) -> None:
        if self._core.config.health.interval != old.health.interval and (
                self._loop.running or self._starter is not None):
            self._stop()
            self._start(now=False)

    def stop(self) -> None:
        self._stop()

    # The loop -------------------------------------------------------------------------

    def _start(self, now: bool) -> None:
        """
        Probe from now on, on the agent's phase; with C{now}, once at once too (an
        always-on agent found at start is ready as soon as it answers).
        """
        if self._loop.running or self._starter is not None:
            return
        core = self._core
        self._round += 1
        interval = core.config.health.interval
        self._starter = core.clock.callLater(
            next_probe(core.name, interval, core.clock.seconds()), self._begin, interval)
        if now:
            self._tick()

    def _begin(self, interval: float) -> None:
        self._starter = None
        self._loop.start(interval, now=True).addErrback(
            log_unless_cancelled, log, "the health loop of {agent} failed",
            agent=self._core.name)

    def _stop(self) -> None:
        if self._loop.running or self._starter is not None:
            self._round += 1
            self._starter = cancel_call(self._starter)
            if self._loop.running:
                self._loop.stop()

    def _tick(self) -> Deferred:
        # Returned to the LoopingCall, so ticks never overlap (a tick while the first
        # probe is still out waits for it); its errback logs, so one bad tick never
        # stops the loop.
        if self._checking is not None:
            return follow(self._checking)
        checked = Deferred.fromCoroutine(self._check(self._round))
        checked.addErrback(log_unless_cancelled, log, "health check of {agent} failed",
                           agent=self._core.name)
        if not checked.called:
            self._checking = checked

            def done(result):
                self._checking = None
                return result

            checked.addBoth(done)
        return follow(checked)

    async def _check(self, round_: int) -> None:
        core = self._core
        health = core.config.health
        result = await self._prober.probe(core.config.backend, health.path, health.timeout)
        if round_ != self._round or core.stopped or core.state is AgentState.SLEEPING:
            return  # the agent slept (or stopped) while the probe was out
        if result.ok:
            self._failures = 0
            # Short of tasks by Swarm's word, it is Swarm's news that ends it: a task
            # being drained, or the replicas that still run, answer the probe.
            if (core.state is not AgentState.READY and not core.slot.moving
                    and core.cause not in (Cause.TASKS, Cause.REPLICAS)):
                core.became_ready(probe=result.detail)
            return
        self._failures += 1
        core.emit("agent.health_failed", detail=result.detail, consecutive=self._failures)
        if self._failures >= health.failures and core.state is not AgentState.DEGRADED:
            core.transition(
                AgentState.DEGRADED, cause=Cause.HEALTH,
                reason=f"{self._failures} health probes failed: {result.detail}",
            )
        core.report_probe_failed()
