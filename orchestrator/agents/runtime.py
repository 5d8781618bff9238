"""
One agent's runtime: its state, its last activity, the single wake in flight, the idle
sleep with its drain, the health loop, reconciliation with Swarm at start, and the
reaction to Swarm's events (L{Agent.service_changed}).

Decisions come from L{orchestrator.policy}; this class carries them out against Swarm,
the prober and the clock, and reports every transition on the event bus.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from orchestrator.agents.drain import ConnectionRegistry
from orchestrator.config.model import AgentConfig, Policy
from orchestrator.events.bus import EventBus
from orchestrator.http.client import BackendPool
from orchestrator.policy.admission import Admission, admit, path_is_ignored, user_agent_is_ignored
from orchestrator.policy.idle import idle_deadline
from orchestrator.policy.swarm import SwarmVerdict, judge_service, task_died, task_down_reason
from orchestrator.policy.wake import WakeFailed, next_probe_delay, wake_progress
from orchestrator.states import AgentState, transition_event
from orchestrator.swarm.values import (
    ServiceStatus,
    SwarmError,
    SwarmEvent,
    SwarmUnavailable,
    UnknownService,
)

log = Logger()


#: Seconds between attempts to read an agent's service while the engine is unreachable.
RECONCILE_RETRY = 10.0


#: How many recent wake durations estimate the next one.
WAKE_HISTORY = 5


#: The engine reports a task's container starting or dying a little before Swarm
#: records it (~0.1 s here): while Swarm is behind, look again this often, this many times.
SWARM_LAG_RETRY = 0.25


SWARM_LAG_LOOKS = 20


class Agent:
    """
    The live counterpart of an L{AgentConfig}.

    @ivar state: the L{AgentState} clients see.
    @ivar reason: why the agent is degraded (C{None} otherwise).
    @ivar backend_running: whether a task is believed to run, i.e. whether a request can
        be forwarded even though the agent is not C{ready}.
    @ivar connections: the agent's open relayed connections (WebSockets), drained when it
        sleeps.
    @ivar pool: keep-alive connections to the backend, closed when the agent sleeps so no
        request ever goes to a task that is gone.
    """

    def __init__(self, config: AgentConfig, *, swarm, prober, bus: EventBus, reactor,
                 wake_slots=None) -> None:
        """
        @param wake_slots: a L{DeferredSemaphore} shared by all agents that caps the wakes
            in progress at once, so a burst over many agents does not stampede Swarm.
        """
        self.config = config
        self.name = config.name
        self._swarm = swarm
        self._prober = prober
        self._bus = bus
        self._clock = reactor
        self.pool = BackendPool(reactor)
        self.connections = ConnectionRegistry()

        # Until Swarm has been asked, the agent is "starting": requests get the usual 503.
        self.state = AgentState.STARTING
        self.reason: str | None = None
        self.backend_running = config.policy is Policy.ALWAYS_ON
        self.last_activity = reactor.seconds()
        self.in_flight = 0
        self.wake_allowed_at = 0.0
        self.wake_started: float | None = None
        #: Where a wake in progress is: "queued", "scheduling", "probing".
        self.wake_phase: str | None = None
        self._wake_durations: deque[float] = deque(maxlen=WAKE_HISTORY)
        self._cold_start_ms: int | None = None
        self._settled_waiters: list[Deferred] = []
        self._wake_slots = wake_slots

        self._waking: Deferred | None = None
        self._stopping: Deferred | None = None
        self._sleeping: Deferred | None = None
        self._drain_interrupted = False
        self._idle_timer = None
        self._reconcile_timer = None
        self._health_failures = 0
        self._health_loop = LoopingCall(self._health_tick)
        self._health_loop.clock = reactor

        # Swarm's events (service_changed).
        self._rechecking: Deferred | None = None
        self._recheck_again = False
        self._recovering: Deferred | None = None
        #: Tasks the engine said died (id -> exit code) that Swarm may still show running.
        self._dead_tasks: dict[str, int | None] = {}
        #: Tasks the engine said started that Swarm may not show running yet.
        self._started_tasks: set[str] = set()
        self._lag_timer = None
        self._lag_looks = 0
        #: Reads Swarm again when reading it failed (the engine is away or restarting).
        self._reread_timer = None
        #: Set by stop(): no flow goes on (a cancelled probe still fires with a result).
        self._stopped = False
        #: The pause between two looks of a wake (and its timer), which news from Swarm
        #: cuts short.
        self._wake_pause: tuple[Deferred, object] | None = None
        #: Degraded because of what Swarm showed (no task, no service): Swarm's news
        #: clears it. A failed wake or failed probes are cleared by their own paths.
        self._degraded_by_swarm = False
        self._restarts_exhausted = False

    # Requests -------------------------------------------------------------------------

    def is_ignored(self, path: str, user_agent: str) -> bool:
        """
        Whether a request comes from an uptime monitor: it neither wakes nor keeps awake.
        """
        idle = self.config.idle
        return path_is_ignored(path, idle.ignore_paths) or (
            bool(user_agent) and user_agent_is_ignored(user_agent, idle.ignore_user_agents)
        )

    def admit(self, ignored: bool) -> Admission:
        """
        Decide a request's fate; a L{Admission.WAKE} decision starts the wake at once, so
        the next request already sees C{starting} (one scale call for any burst).
        """
        admission = admit(
            policy=self.config.policy,
            state=self.state,
            backend_running=self.backend_running,
            ignored=ignored,
            now=self._clock.seconds(),
            wake_allowed_at=self.wake_allowed_at,
        )
        if admission is Admission.WAKE:
            self.wake(reason="request")
            if self.state is AgentState.READY:
                return Admission.FORWARD  # the wake finished at once
        return admission

    def request_started(self) -> None:
        self.in_flight += 1
        self.touch()

    def request_finished(self) -> None:
        self.in_flight -= 1
        self.touch()

    def touch(self) -> None:
        """
        Record activity now. Activity during a drain calls the sleep off.
        """
        self.last_activity = self._clock.seconds()
        if self._sleeping is not None:
            self._drain_interrupted = True

    # Waking ---------------------------------------------------------------------------

    def wake(self, reason: str) -> Deferred:
        """
        Scale the agent to 1 and wait until it is ready; one wake at a time. Fires when
        the wake is over (ready or degraded); never fails.
        """
        if self._waking is None:
            self._transition(AgentState.STARTING, reason=reason)
            return _follow(self._start_wake(scale=True))
        return _follow(self._waking)

    def _start_wake(self, scale: bool) -> Deferred:
        self.wake_started = self._clock.seconds()
        return self._run("_waking", self._wake(scale), "wake of {agent} failed")

    def _run(self, attribute: str, flow, failure_message: str) -> Deferred:
        """
        Run the coroutine C{flow}, keeping its Deferred in C{attribute} while it runs (it
        may finish at once), and log its failure.
        """
        running = Deferred.fromCoroutine(flow)
        running.addErrback(_log_unless_cancelled, failure_message, agent=self.name)
        if not running.called:
            setattr(self, attribute, running)

            def finished(result):
                setattr(self, attribute, None)
                return result

            running.addBoth(finished)
        return running

    async def _wake(self, scale: bool) -> None:
        started = self.wake_started
        phases: dict[str, float] = {}
        try:
            if self._wake_slots is not None:
                self._enter_phase(phases, "queued")
                await self._wake_slots.acquire()
            try:
                await self._scale_up_and_probe(scale, started, phases)
            finally:
                if self._wake_slots is not None:
                    self._wake_slots.release()
        except WakeFailed as failure:
            await self._wake_failed(str(failure))
        except SwarmError as failure:
            await self._wake_failed(str(failure))
        else:
            self._enter_phase(phases, None)
            seconds = self._clock.seconds() - started
            self._wake_durations.append(seconds)
            self._cold_start_ms = round(seconds * 1000)
            self._became_ready(wake_seconds=round(seconds, 3), phases=phases)
        finally:
            self.wake_phase = None

    async def _scale_up_and_probe(self, scale: bool, started: float, phases) -> None:
        service = self.config.service
        if self._stopping is not None:
            await _follow(self._stopping)
        earlier = frozenset(task.id for task in (await self._swarm.status(service)).tasks)
        self._enter_phase(phases, "scheduling")
        if scale:
            await self._swarm.scale(service, 1)
        await self._until_ready(earlier, started + self.config.startup_timeout, phases)

    def _enter_phase(self, phases: dict[str, float], phase: str | None) -> None:
        """
        Close the current wake phase (adding its duration to C{phases}) and open C{phase}.
        """
        now = self._clock.seconds()
        if self.wake_phase is not None:
            phases[self.wake_phase] = round(
                phases.get(self.wake_phase, 0) + now - self._phase_started, 3)
        self.wake_phase = phase
        self._phase_started = now

    async def _until_ready(self, earlier: frozenset[str], deadline: float, phases) -> None:
        detail = "no task running yet"
        health = self.config.health
        while True:
            status = await self._swarm.status(self.config.service)
            if wake_progress(status, earlier):
                if self.wake_phase != "probing":
                    self._enter_phase(phases, "probing")
                remaining = max(deadline - self._clock.seconds(), 0.1)
                result = await self._prober.probe(
                    self.config.backend, health.path, min(health.timeout, remaining)
                )
                if result.ok:
                    return
                detail = f"task running, probe failed: {result.detail}"
            if self._clock.seconds() >= deadline:
                raise WakeFailed(
                    f"not ready within startup_timeout {self.config.startup_timeout:g}s "
                    f"({detail})"
                )
            delay = next_probe_delay(self._clock.seconds() - self.wake_started)
            await self._pause(delay)

    def _pause(self, seconds: float) -> Deferred:
        """
        Wait C{seconds}, or less if Swarm has news first (L{service_changed}).
        """
        if self._stopped:
            return fail(CancelledError())

        def cancel(_: Deferred) -> None:
            if timer.active():
                timer.cancel()

        paused: Deferred = Deferred(cancel)
        timer = self._clock.callLater(seconds, self._end_pause)
        self._wake_pause = (paused, timer)
        return paused

    def _end_pause(self) -> None:
        """
        End the wake's pause now (its timer fired, or Swarm has news).
        """
        if self._wake_pause is None:
            return
        (paused, timer), self._wake_pause = self._wake_pause, None
        if timer.active():
            timer.cancel()
        if not paused.called:
            paused.callback(None)

    async def _wake_failed(self, reason: str) -> None:
        self.backend_running = False
        self.wake_allowed_at = self._clock.seconds() + self.config.wake_retry
        self._transition(AgentState.DEGRADED, reason=reason)
        # Do not leave a task crash-looping on the host: the next request tries again.
        try:
            await self._swarm.scale(self.config.service, 0)
        except SwarmError as failure:
            log.warn("could not scale {agent} back to 0 after a failed wake: {error}",
                     agent=self.name, error=str(failure))

    def _became_ready(self, **fields) -> None:
        self.backend_running = True
        self._health_failures = 0
        self._restarts_exhausted = False
        self.last_activity = self._clock.seconds()
        self._transition(AgentState.READY, **fields)
        self._start_health_loop(now=False)
        self._schedule_idle_check(self.last_activity + self.config.idle.timeout)

    # Sleeping -------------------------------------------------------------------------

    def _schedule_idle_check(self, when: float) -> None:
        if self.config.policy is not Policy.ON_DEMAND:
            return
        self._cancel_idle_check()
        delay = max(when - self._clock.seconds(), 0)
        self._idle_timer = self._clock.callLater(delay, self._idle_check)

    def _cancel_idle_check(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.state is not AgentState.READY:
            return
        when = idle_deadline(
            last_activity=self.last_activity,
            in_flight=self.in_flight,
            timeout=self.config.idle.timeout,
            now=self._clock.seconds(),
        )
        if when is not None:
            self._schedule_idle_check(when)
            return
        self._run("_sleeping", self._sleep(), "sleep of {agent} failed")

    async def _sleep(self) -> None:
        self._drain_interrupted = False
        idle_for = self._clock.seconds() - self.last_activity
        aborted = await self.connections.drain(self.config.idle.drain_timeout, self._clock)
        if self._drain_interrupted or self.state is not AgentState.READY:
            log.info("activity during the drain of {agent}: staying awake", agent=self.name)
            self._schedule_idle_check(self.last_activity + self.config.idle.timeout)
            return
        self.backend_running = False
        self._stop_health_loop()
        self._transition(AgentState.SLEEPING, idle_seconds=round(idle_for, 3),
                         aborted_connections=aborted)
        self._run("_stopping", self._scale_down(), "scaling {agent} to 0 failed")

    async def _scale_down(self) -> None:
        try:
            await self.pool.close_idle()
            await self._swarm.scale(self.config.service, 0)
        except SwarmError as failure:
            self.wake_allowed_at = self._clock.seconds()
            self._transition(AgentState.DEGRADED, reason=f"could not scale to 0: {failure}")

    # Health ---------------------------------------------------------------------------

    def _start_health_loop(self, now: bool) -> None:
        if not self._health_loop.running:
            self._health_loop.start(self.config.health.interval, now=now)

    def _stop_health_loop(self) -> None:
        if self._health_loop.running:
            self._health_loop.stop()

    def _health_tick(self) -> Deferred:
        checked = Deferred.fromCoroutine(self._check_health())
        checked.addErrback(_log_unless_cancelled, "health check of {agent} failed", agent=self.name)
        return checked

    async def _check_health(self) -> None:
        health = self.config.health
        result = await self._prober.probe(self.config.backend, health.path, health.timeout)
        if result.ok:
            self._health_failures = 0
            if self.state is not AgentState.READY and self._waking is None:
                # Through _became_ready: an on-demand agent's idle clock starts again.
                self._became_ready(probe=result.detail)
            return
        self._health_failures += 1
        self._bus.emit("agent.health_failed", self.name, detail=result.detail,
                       consecutive=self._health_failures)
        if self._health_failures >= health.failures and self.state is not AgentState.DEGRADED:
            self._transition(
                AgentState.DEGRADED,
                reason=f"{self._health_failures} health probes failed: {result.detail}",
            )
        # Polling is the safety net under the event stream: a failed probe also reads
        # Swarm, so a dead task or exhausted restarts are seen without any event.
        self.service_changed()

    # Swarm's events -------------------------------------------------------------------

    def service_changed(self, events: Iterable[SwarmEvent] = ()) -> Deferred:
        """
        Swarm reported news about the agent's service (C{events}; none after the event
        stream reconnected): read its status now, rather than at the next poll, and act.

        A wake in progress looks again at once. Otherwise an agent whose task died is
        C{degraded} at once (always-on, or ready on-demand), and C{ready} again once a
        task runs and the probe passes; when Swarm has given up restarting, also
        C{restart.exhausted}. Fires when done; never fails.
        """
        if self._stopped:
            return succeed(None)
        for event in events:
            if event.kind == "container" and event.task_id:
                if event.action == "die":
                    self._dead_tasks[event.task_id] = event.exit_code
                    self._started_tasks.discard(event.task_id)
                elif event.action == "start":
                    self._started_tasks.add(event.task_id)
        if self._waking is not None:
            self._end_pause()
            return succeed(None)
        if self._reconcile_timer is not None and self._reconcile_timer.active():
            # The first reconciliation is waiting to try again: it is the re-read.
            self._reconcile_timer.cancel()
            return self.start().addErrback(_log_unless_cancelled, "reconciling {agent} failed",
                                           agent=self.name)
        if self._rechecking is not None:
            self._recheck_again = True
            return _follow(self._rechecking)
        return _follow(self._run("_rechecking", self._recheck(), "re-reading {agent} failed"))

    async def _recheck(self) -> None:
        self._recheck_again = True
        while self._recheck_again:
            self._recheck_again = False
            await self._check_service()

    def _busy(self) -> bool:
        """
        Whether one of our own flows is moving the service (and reads Swarm itself).
        """
        return any(flow is not None for flow in (self._waking, self._sleeping, self._stopping))

    async def _check_service(self) -> None:
        if self._busy():
            return
        try:
            status = await self._swarm.status(self.config.service)
        except UnknownService as failure:
            self._swarm_trouble(str(failure))
            return
        except SwarmError as failure:
            # Read again later: the engine may be restarting, or not a manager yet.
            log.info("could not read the service of {agent}: {error}",
                     agent=self.name, error=str(failure))
            if self._reread_timer is None or not self._reread_timer.active():
                self._reread_timer = self._clock.callLater(RECONCILE_RETRY,
                                                           self.service_changed)
            return
        if self._busy() or self._stopped:
            return
        running = {task.id for task in status.running_tasks}
        live = {task.id for task in status.tasks if task.live}
        # Dead tasks Swarm has not recorded as ended yet (it may even show them starting,
        # then running, after the engine said they died).
        lagging = {task_id: code for task_id, code in self._dead_tasks.items()
                   if task_id in live}
        verdict = judge_service(status, lagging)
        await self._act(verdict, status, lagging)
        # Forget what Swarm has caught up with; look again soon for the rest.
        self._dead_tasks = lagging
        self._started_tasks = {task_id for task_id in self._started_tasks
                               if task_id in live and task_id not in running}
        self._look_again_while_swarm_lags()

    async def _act(self, verdict: SwarmVerdict, status: ServiceStatus,
                   lagging: dict[str, int | None]) -> None:
        always_on = self.config.policy is Policy.ALWAYS_ON
        state = self.state
        if verdict is SwarmVerdict.TASK_RUNS:
            self._restarts_exhausted = False
            if (state is AgentState.DEGRADED and self._degraded_by_swarm) or (
                    state is AgentState.STARTING and always_on):
                self._start_recovery()
        elif verdict is SwarmVerdict.SCALED_TO_ZERO:
            if always_on:
                self._swarm_trouble(
                    f"service {status.name} is scaled to 0: Swarm starts always-on agents, "
                    "the orchestrator never does")
            elif state is AgentState.READY or (
                    state is AgentState.DEGRADED and self._degraded_by_swarm):
                self._slept_elsewhere()
        elif state in (AgentState.READY, AgentState.DEGRADED) and (
                always_on or state is AgentState.READY or self._degraded_by_swarm) or (
                state is AgentState.STARTING and always_on and task_died(status, lagging)):
            # (An always-on agent still starting whose first task is only on its way
            # stays starting.)
            self._swarm_trouble(task_down_reason(status, lagging))
            if verdict is SwarmVerdict.RESTARTS_EXHAUSTED:
                await self._restarts_given_up(status)

    def _swarm_trouble(self, reason: str) -> None:
        """
        Be C{degraded} for what Swarm shows; already degraded, take up the new reason.
        """
        if self.state is AgentState.DEGRADED:
            self.reason = reason
        else:
            self._transition(AgentState.DEGRADED, reason=reason)
        self._degraded_by_swarm = True

    async def _restarts_given_up(self, status: ServiceStatus) -> None:
        if self._restarts_exhausted:
            return
        self._restarts_exhausted = True
        last_error = status.tasks[-1].error if status.tasks else ""
        self._bus.emit("restart.exhausted", self.name, service=status.name,
                       attempts=status.failed_attempts, max_attempts=status.max_attempts,
                       error=last_error)
        if self.config.policy is Policy.ON_DEMAND:
            # As after a failed wake: scaled to 0, a request after wake_retry tries again
            # (from 0, so Swarm counts its attempts afresh).
            await self._wake_failed(self.reason or "Swarm gave up restarting")
            self._degraded_by_swarm = False

    def _slept_elsewhere(self) -> None:
        """
        Someone else scaled an on-demand agent to 0: it sleeps.
        """
        self.backend_running = False
        self._cancel_idle_check()
        self._stop_health_loop()
        self._transition(AgentState.SLEEPING, reason="scaled to 0 outside the orchestrator")
        closed = self.pool.close_idle()
        closed.addErrback(_log_unless_cancelled, "closing connections to {agent} failed",
                          agent=self.name)

    def _look_again_while_swarm_lags(self) -> None:
        if self._lag_timer is not None and self._lag_timer.active():
            return
        if not self._dead_tasks and not self._started_tasks:
            self._lag_looks = 0
            return
        self._lag_looks += 1
        if self._lag_looks > SWARM_LAG_LOOKS:
            log.warn("Swarm still shows tasks of {agent} otherwise than the engine said: "
                     "{tasks}", agent=self.name,
                     tasks=sorted([*self._dead_tasks, *self._started_tasks]))
            self._dead_tasks = {}
            self._started_tasks = set()
            self._lag_looks = 0
            return
        self._lag_timer = self._clock.callLater(SWARM_LAG_RETRY, self.service_changed)

    def _start_recovery(self) -> None:
        if self._recovering is None:
            self._run("_recovering", self._recover(), "recovery of {agent} failed")

    async def _recover(self) -> None:
        """
        A task runs again: probe it (fast, then backing off) until it answers or
        C{startup_timeout} has passed; the health loop carries on after that.
        """
        health = self.config.health
        started = self._clock.seconds()
        deadline = started + self.config.startup_timeout
        while True:
            result = await self._prober.probe(self.config.backend, health.path, health.timeout)
            if self._stopped or self._busy() or self.state not in (
                    AgentState.DEGRADED, AgentState.STARTING):
                return
            if result.ok:
                self._became_ready(probe=result.detail)
                return
            now = self._clock.seconds()
            if now >= deadline:
                log.info("{agent} runs a task again but its probe still fails: {detail}",
                         agent=self.name, detail=result.detail)
                return
            await deferLater(self._clock, next_probe_delay(now - started))

    # Reconciliation and lifecycle -----------------------------------------------------

    def start(self) -> Deferred:
        """
        Read the agent's service from Swarm and take up the state it implies. Fires when
        the state is known (a running on-demand agent may still be probing).
        """
        return Deferred.fromCoroutine(self._reconcile())

    async def _reconcile(self) -> None:
        self._reconcile_timer = None
        try:
            status = await self._swarm.status(self.config.service)
        except UnknownService as failure:
            self._settle(AgentState.DEGRADED, reason=str(failure))
        except SwarmUnavailable as failure:
            self._settle(AgentState.DEGRADED, reason=f"cannot read the service: {failure}")
            self._reconcile_timer = self._clock.callLater(RECONCILE_RETRY, self.start)
        except SwarmError as failure:
            self._settle(AgentState.DEGRADED, reason=f"cannot read the service: {failure}")
        else:
            if self.config.policy is Policy.ALWAYS_ON:
                self._settle(AgentState.STARTING)
            elif status.replicas == 0:
                self._settle(AgentState.SLEEPING)
            else:
                # Already up (we restarted): keep it, its idle clock starts now.
                self._settle(AgentState.STARTING)
                self.last_activity = self._clock.seconds()
                self._start_wake(scale=False)
        if self.config.policy is Policy.ALWAYS_ON:
            self._start_health_loop(now=True)

    def _settle(self, state: AgentState, reason: str | None = None) -> None:
        """
        Take up the state found at reconciliation (not a transition: nothing happened).
        Becoming C{degraded} is announced once: not again if the event stream's own
        re-read got there first.
        """
        was = self.state
        self.state = state
        self.reason = reason
        self._degraded_by_swarm = state is AgentState.DEGRADED
        self._bus.emit("agent.reconciled", self.name, state=state.value,
                       **({"reason": reason} if reason else {}))
        if state is AgentState.DEGRADED and was is not AgentState.DEGRADED:
            self._bus.emit("agent.degraded", self.name, reason=reason)
        if state in (AgentState.READY, AgentState.DEGRADED):
            self.release_waiters()

    def stop(self) -> None:
        """
        Stop every timer and flow. Never scales anything: shutdown leaves agents as they
        are, and the next start reconciles.
        """
        self._stopped = True
        self._cancel_idle_check()
        self._stop_health_loop()
        for timer in (self._reconcile_timer, self._lag_timer, self._reread_timer):
            if timer is not None and timer.active():
                timer.cancel()
        for flow in (self._waking, self._sleeping, self._rechecking, self._recovering):
            if flow is not None:
                flow.cancel()

    def reconfigure(self, config: AgentConfig) -> None:
        """
        Take up a changed configuration (a reload) keeping the agent's state, activity and
        connections. Changing the service or the policy needs a new L{Agent} instead.
        """
        old, self.config = self.config, config
        if config.backend != old.backend:
            self.pool.close_idle()
        if config.health.interval != old.health.interval and self._health_loop.running:
            self._health_loop.stop()
            self._start_health_loop(now=False)
        if self._idle_timer is not None:
            self._schedule_idle_check(self.last_activity + config.idle.timeout)

    # Reporting ------------------------------------------------------------------------

    def _transition(self, new: AgentState, **fields) -> None:
        old = self.state
        if old is new:
            return
        event_type = transition_event(self.name, old, new)
        self.state = new
        self.reason = fields.get("reason") if new is AgentState.DEGRADED else None
        self._degraded_by_swarm = False
        self._bus.emit(event_type, self.name, previous=old.value, state=new.value, **fields)
        if new in (AgentState.READY, AgentState.DEGRADED):
            self.release_waiters()

    def health(self) -> dict:
        """
        The agent's state as the JSON body of C{/api/health} and of 503 answers; while
        starting, also where the wake is (C{phase}) and, once a wake has been measured,
        the seconds it should still take (C{estimated_wait}).
        """
        body = {"status": self.state.value, "agent": self.name}
        if self.reason is not None:
            body["reason"] = self.reason
        if self.state is AgentState.STARTING:
            if self.wake_phase is not None:
                body["phase"] = self.wake_phase
            estimate = self.estimated_wait()
            if estimate is not None:
                body["estimated_wait"] = estimate
        return body

    def estimated_wait(self) -> float | None:
        """
        Seconds the wake in progress should still take, from the median of the recent
        wakes of this agent; C{None} before the first was measured.
        """
        if not self._wake_durations or self.wake_started is None:
            return None
        elapsed = self._clock.seconds() - self.wake_started
        return round(max(statistics.median(self._wake_durations) - elapsed, 0.0), 1)

    def take_cold_start(self) -> int | None:
        """
        Milliseconds the last wake took, once: for the first response after a wake.
        """
        cold_start, self._cold_start_ms = self._cold_start_ms, None
        return cold_start

    def when_settled(self) -> Deferred:
        """
        A Deferred that fires once the agent is C{ready} or C{degraded} (at once if it is),
        or when L{release_waiters} lets every waiter go (shutdown). Cancel it to stop
        waiting.
        """
        if self.state in (AgentState.READY, AgentState.DEGRADED):
            return Deferred.fromCoroutine(_nothing())

        def forget(waiter: Deferred) -> None:
            if waiter in self._settled_waiters:
                self._settled_waiters.remove(waiter)

        waiter: Deferred = Deferred(forget)
        self._settled_waiters.append(waiter)
        return waiter

    def release_waiters(self) -> None:
        waiters, self._settled_waiters = self._settled_waiters, []
        for waiter in waiters:
            waiter.callback(self.state)


async def _nothing() -> None:
    return None


def _follow(deferred: Deferred) -> Deferred:
    """
    A new Deferred that fires when C{deferred} does, without touching its result chain.
    """
    follower: Deferred = Deferred()
    deferred.addBoth(lambda result: (follower.callback(None), result)[1])
    return follower


def _log_unless_cancelled(failure, message: str, **fields) -> None:
    if not failure.check(CancelledError):
        log.failure(message, failure, **fields)
