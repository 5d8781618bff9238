"""
Waking an on-demand agent: scale its service up and probe it until it answers, in
phases (queued for a wake slot, scheduling, probing) that the status and the
C{agent.ready} event report; one wake at a time, however many requests ask.
"""

from __future__ import annotations

import statistics
from collections import deque

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, fail, succeed
from twisted.logger import Logger

from orchestrator.agents.capacity import NoRoom
from orchestrator.agents.core import AgentCore, Cause, FlowBase
from orchestrator.agents.slot import Flow, FlowKind
from orchestrator.config.model import Policy
from orchestrator.flows import Running, cancel_call
from orchestrator.policy.wake import WakeFailed, next_probe_delay, wake_progress
from orchestrator.states import AgentState
from orchestrator.status import WakeRecord
from orchestrator.swarm.values import SwarmError, SwarmEvent

log = Logger()

#: How many recent wake durations estimate the next one.
WAKE_HISTORY = 5


async def scale_to_zero_after_failure(core: AgentCore, swarm, reason: str,
                                      scaled: bool = True) -> None:
    """
    Give up on an on-demand agent that cannot run (a failed wake, Swarm out of restarts):
    C{degraded}, scaled back to 0 so nothing crash-loops on the host, and a request
    after C{wake_retry} tries again. A wake that never scaled (no room on the host:
    C{scaled} false) has nothing to scale back.
    """
    core.backend_running = False
    core.wake_allowed_at = core.clock.seconds() + core.config.wake_retry
    core.degrade(reason, Cause.WAKE_FAILED)
    if not scaled:
        return
    try:
        await swarm.scale(core.config.service, 0)
    except SwarmError as failure:
        log.warn("could not scale {agent} back to 0: {error}", agent=core.name,
                 error=str(failure))


class Waking(FlowBase):
    """
    The wake flow of one agent.
    """

    def __init__(self, core: AgentCore, *, swarm, prober,
                 wake_slots: DeferredSemaphore | None = None, capacity=None) -> None:
        """
        @param wake_slots: shared by all agents, it caps the wakes in progress at once,
            so a burst over many agents does not stampede Swarm.
        @param capacity: shared by all agents, the host's budget
            (L{orchestrator.agents.capacity.Capacity}): a wake asks it for room before
            it scales the agent up, and waits (or is refused) when there is none.
        """
        self._core = core
        self._swarm = swarm
        self._prober = prober
        self._slots = wake_slots
        self._capacity = capacity
        self._waking = Running(log, "wake of {agent} failed", agent=core.name)
        self._recent: deque[WakeRecord] = deque(maxlen=WAKE_HISTORY)
        self._cold_start_ms: int | None = None
        self._started: float | None = None
        self._phase_started = 0.0
        #: The pause between two looks of a wake and its timer, which news cuts short.
        self._pause: tuple[Deferred, object] | None = None

    # What the runtime offers ----------------------------------------------------------

    def wake(self, reason: str) -> Deferred:
        """
        Scale the agent up and wait until it is ready; one wake at a time. A ready agent
        is left as it is. Fires when the wake is over (ready or degraded); never fails.
        """
        if self._waking.running:
            return self._waking.follow()
        if self._core.state is AgentState.READY or self._core.stopped:
            return succeed(None)
        self._core.transition(AgentState.STARTING, reason=reason)
        return self._start(scale=True)

    @property
    def recent(self) -> tuple[WakeRecord, ...]:
        """
        The most recent wakes, oldest first.
        """
        return tuple(self._recent)

    def estimated_wait(self) -> float | None:
        """
        Seconds the wake in progress should still take, from the median of this agent's
        recent successful wakes; C{None} before the first was measured.
        """
        durations = [wake.seconds for wake in self._recent if wake.succeeded]
        if not durations or self._started is None or not self._waking.running:
            return None
        elapsed = self._core.clock.seconds() - self._started
        return round(max(statistics.median(durations) - elapsed, 0.0), 1)

    def take_cold_start(self) -> int | None:
        """
        Milliseconds the last wake took, once: for the first response after a wake.
        """
        cold_start, self._cold_start_ms = self._cold_start_ms, None
        return cold_start

    # What it hears --------------------------------------------------------------------

    def settled(self, state: AgentState) -> None:
        # Reconciliation found an on-demand agent already up (we restarted): keep it,
        # probe it as a wake would, without scaling.
        core = self._core
        if state is AgentState.STARTING and core.config.policy is Policy.ON_DEMAND:
            core.last_activity = core.clock.seconds()
            self._start(scale=False)

    def swarm_news(self, events: tuple[SwarmEvent, ...]) -> None:
        self._end_pause()

    def stop(self) -> None:
        self._end_pause()
        self._waking.cancel()

    # The flow -------------------------------------------------------------------------

    def _start(self, scale: bool) -> Deferred:
        self._started = self._core.clock.seconds()
        return self._waking.start(self._wake(scale))

    async def _wake(self, scale: bool) -> None:
        core = self._core
        started = self._started
        phases: dict[str, float] = {}
        if self._slots is not None or core.slot.moving:
            # Waiting for a wake slot, or for a scale-down in progress to end.
            self._enter_phase(phases, "queued")
        flow = await core.slot.acquire(FlowKind.WAKING)
        deadline = started + core.config.startup_timeout
        try:
            if scale and self._capacity is not None:
                deadline += await self._room(flow, phases)
            if self._slots is not None:
                await self._slots.acquire()
            try:
                await self._scale_up_and_probe(flow, scale, deadline, phases)
            finally:
                if self._slots is not None:
                    self._slots.release()
        except (WakeFailed, SwarmError) as failure:
            if flow.active:
                self._enter_phase(phases, None)
                self._recent.append(WakeRecord(started, round(core.clock.seconds() - started, 3),
                                               phases, succeeded=False))
                await scale_to_zero_after_failure(core, self._swarm, str(failure),
                                                  scaled=not isinstance(failure, NoRoom))
        else:
            self._enter_phase(phases, None)
            seconds = core.clock.seconds() - started
            self._recent.append(WakeRecord(started, round(seconds, 3), phases))
            self._cold_start_ms = round(seconds * 1000)
            core.became_ready(wake_seconds=round(seconds, 3), phases=phases)
        finally:
            core.set_phase(None)
            core.slot.end(flow)

    async def _room(self, flow: Flow, phases) -> float:
        """
        Wait for room on the host (others may be evicted for it); return the seconds
        waited, which the startup deadline does not count.

        @raise NoRoom: if there is none, and will be none.
        """
        core = self._core
        asked = core.clock.seconds()

        def phase(name: str) -> None:
            if core.phase != name and flow.active:
                self._enter_phase(phases, name)

        await self._capacity.reserve(core.name, phase)
        self._check(flow)
        if core.phase in ("capacity", "evicting"):
            self._enter_phase(phases, "queued" if self._slots is not None else None)
        return core.clock.seconds() - asked

    async def _scale_up_and_probe(self, flow: Flow, scale: bool, deadline: float,
                                  phases) -> None:
        core = self._core
        service = core.config.service
        status = await self._swarm.status(service)
        core.saw_service(status)
        earlier = frozenset(task.id for task in status.tasks)
        self._check(flow)
        self._enter_phase(phases, "scheduling")
        if scale:
            await self._swarm.scale(service, core.config.replicas)
            self._check(flow)
        await self._until_ready(flow, earlier, deadline, phases)

    async def _until_ready(self, flow: Flow, earlier: frozenset[str], deadline: float,
                           phases) -> None:
        core = self._core
        detail = "no task running yet"
        while True:
            status = await self._swarm.status(core.config.service)
            self._check(flow)
            core.saw_service(status)
            if wake_progress(status, earlier):
                if core.phase != "probing":
                    self._enter_phase(phases, "probing")
                health = core.config.health
                remaining = max(deadline - core.clock.seconds(), 0.1)
                result = await self._prober.probe(core.config.backend, health.path,
                                                  min(health.timeout, remaining))
                self._check(flow)
                if result.ok:
                    return
                detail = f"task running, probe failed: {result.detail}"
            if core.clock.seconds() >= deadline:
                raise WakeFailed(
                    f"not ready within startup_timeout {core.config.startup_timeout:g}s "
                    f"({detail})"
                )
            await self._wait(next_probe_delay(core.clock.seconds() - self._started))
            self._check(flow)

    def _check(self, flow: Flow) -> None:
        if not flow.active:
            raise CancelledError()

    def _enter_phase(self, phases: dict[str, float], phase: str | None) -> None:
        """
        Close the current wake phase (adding its duration to C{phases}) and open C{phase}.
        """
        core = self._core
        now = core.clock.seconds()
        if core.phase is not None:
            phases[core.phase] = round(phases.get(core.phase, 0) + now - self._phase_started, 3)
        core.set_phase(phase)
        self._phase_started = now

    def _wait(self, seconds: float) -> Deferred:
        """
        Wait C{seconds}, or less if Swarm has news first.
        """
        if self._core.stopped:
            return fail(CancelledError())

        def cancel(_: Deferred) -> None:
            cancel_call(timer)

        paused: Deferred = Deferred(cancel)
        timer = self._core.clock.callLater(seconds, self._end_pause)
        self._pause = (paused, timer)
        return paused

    def _end_pause(self) -> None:
        if self._pause is None:
            return
        (paused, timer), self._pause = self._pause, None
        cancel_call(timer)
        if not paused.called:
            paused.callback(None)
