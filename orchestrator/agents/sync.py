"""
Keeping an agent in step with Swarm: reconciliation at start, a re-read when Swarm has
news (or a probe failed), the reaction the policy decides (L{orchestrator.policy.swarm}),
and the fast probing of a task that runs again.

The engine reports a task's container dying or starting a little before Swarm records it
(~0.1 s here), so what the engine said is remembered until Swarm shows it, and Swarm is
read again soon while it lags.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger

from orchestrator.agents.core import AgentCore, Cause, FlowBase
from orchestrator.agents.slot import Flow, FlowKind
from orchestrator.agents.wake import scale_to_zero_after_failure
from orchestrator.config.model import Policy
from orchestrator.flows import Running, cancel_call, log_unless_cancelled
from orchestrator.policy.swarm import (
    Degrade,
    Recover,
    SleptElsewhere,
    SwarmVerdict,
    judge_service,
    react,
)
from orchestrator.policy.wake import next_probe_delay
from orchestrator.states import AgentState
from orchestrator.swarm.values import (
    ServiceStatus,
    SwarmError,
    SwarmEvent,
    SwarmUnavailable,
    UnknownService,
)

log = Logger()

#: The causes of a degradation that what Swarm shows may end.
SWARM_CAUSES = frozenset({Cause.SWARM, Cause.TASKS, Cause.REPLICAS})

#: Seconds between attempts to read an agent's service while the engine is unreachable.
RECONCILE_RETRY = 10.0
#: While Swarm shows tasks otherwise than the engine said, look again this often, this
#: many times.
SWARM_LAG_RETRY = 0.25
SWARM_LAG_LOOKS = 20


class SwarmSync(FlowBase):
    """
    What one agent does about what Swarm shows.
    """

    def __init__(self, core: AgentCore, *, swarm, prober, task_poll=None) -> None:
        """
        @param task_poll: the awake agents' tasks read together
            (L{orchestrator.agents.taskpoll.TaskPoll}), which this agent joins while
            awake; C{None}: Swarm's events and the health probes alone.
        """
        self._core = core
        self._swarm = swarm
        self._prober = prober
        self._task_poll = task_poll
        #: Tasks seen running since the agent last woke: one that no longer runs is a
        #: replica lost (L{orchestrator.policy.swarm.replicas_short}).
        self._seen_running: set[str] = set()
        self._reconcile_timer = None
        self._reread_timer = None
        self._lag_timer = None
        self._lag_looks = 0
        self._rechecking = Running(log, "re-reading {agent} failed", agent=core.name)
        self._recheck_again = False
        self._recovering = Running(log, "recovery of {agent} failed", agent=core.name)
        #: Tasks the engine said died (id -> exit code) that Swarm may still show running.
        self.dead_tasks: dict[str, int | None] = {}
        #: Tasks the engine said started that Swarm may not show running yet.
        self._started_tasks: set[str] = set()
        #: C{restart.exhausted} was announced for the current outage.
        self._exhaustion_told = False
        #: The first reconciliation failed on a read made for every agent, which will
        #: be tried again for all of them (L{start} with C{retry}).
        self._awaiting_retry = False

    @property
    def lagging(self) -> bool:
        """
        Whether the engine said something that Swarm does not show yet (and Swarm will be
        read again soon).
        """
        return bool(self.dead_tasks or self._started_tasks) or (
            self._lag_timer is not None and self._lag_timer.active())

    # Reconciliation --------------------------------------------------------------------

    def start(self, given: ServiceStatus | SwarmError | None = None,
              retry: bool = False) -> Deferred:
        """
        Read the agent's service and take up the state it implies. Fires when the state
        is known (a running on-demand agent may still be probing).

        @param given: what Swarm shows of the service, read for every agent at once
            (L{orchestrator.agents.reconcile}): its status, or the error the read failed
            with (then whoever read it tries again for every agent, not this agent
            alone); C{None}: read it now.
        @param retry: the read for every agent is tried again: taken up only if this
            agent is still waiting for it (no wake or sleep began, no re-read got there
            first).
        """
        if retry and (not self._awaiting_retry or self._core.slot.moving):
            return succeed(None)
        return Deferred.fromCoroutine(self._reconcile(given))

    async def _read(self, given: ServiceStatus | SwarmError | None) -> ServiceStatus:
        """
        The agent's service as C{given} (a status, or the error reading it failed with),
        or read from Swarm when nothing was given.
        """
        if given is None:
            return await self._swarm.status(self._core.config.service)
        if isinstance(given, SwarmError):
            raise given
        return given

    async def _reconcile(self, given: ServiceStatus | SwarmError | None = None) -> None:
        core = self._core
        self._reconcile_timer = None
        self._awaiting_retry = False
        try:
            status = await self._read(given)
        except UnknownService as failure:
            core.settle(AgentState.DEGRADED, reason=str(failure))
        except SwarmUnavailable as failure:
            core.settle(AgentState.DEGRADED, reason=f"cannot read the service: {failure}")
            if given is None:
                self._reconcile_timer = core.clock.callLater(RECONCILE_RETRY,
                                                             self._retry_start)
            else:
                self._awaiting_retry = True
        except SwarmError as failure:
            core.settle(AgentState.DEGRADED, reason=f"cannot read the service: {failure}")
        else:
            core.saw_service(status)
            if core.config.policy is Policy.ON_DEMAND and status.replicas == 0:
                core.settle(AgentState.SLEEPING)
            else:
                # Always-on: its probe makes it ready. On-demand and already up (we
                # restarted): the wake flow probes it, its idle clock starting now.
                core.settle(AgentState.STARTING)

    def _retry_start(self) -> None:
        self.start().addErrback(log_unless_cancelled, log, "reconciling {agent} failed",
                                agent=self._core.name)

    # News ------------------------------------------------------------------------------

    def swarm_news(self, events: tuple[SwarmEvent, ...]) -> None:
        self._remember(events)
        self.recheck()

    def probe_failed(self) -> None:
        self.recheck()

    def transitioned(self, old: AgentState, new: AgentState) -> None:
        if new is AgentState.READY:
            self._exhaustion_told = False
        self._watch_tasks()

    def settled(self, state: AgentState) -> None:
        self._watch_tasks()

    def stop(self) -> None:
        if self._task_poll is not None:
            self._task_poll.forget(self)
        for timer in (self._reconcile_timer, self._lag_timer, self._reread_timer):
            cancel_call(timer)
        self._rechecking.cancel()
        self._recovering.cancel()

    def _watch_tasks(self) -> None:
        """
        Join the task poll while a task runs or should (awake, or always-on) where the
        engine's events do not reach (L{TaskPoll.needed_for}); leave it asleep, after a
        failed wake, or with every task on the engine's own node: a sleeping agent
        costs no read.
        """
        core = self._core
        if core.state is AgentState.SLEEPING:
            self._seen_running.clear()
        if self._task_poll is None or core.stopped:
            return
        if core.state is not AgentState.SLEEPING and (
                core.backend_running or core.config.policy is Policy.ALWAYS_ON) and (
                self._task_poll.needed_for(core.task_nodes)):
            self._task_poll.watch(self, core.config.service, self.recheck)
        else:
            self._task_poll.forget(self)

    def _remember(self, events: Iterable[SwarmEvent]) -> None:
        for event in events:
            if event.kind == "container" and event.task_id:
                if event.action == "die":
                    self.dead_tasks[event.task_id] = event.exit_code
                    self._started_tasks.discard(event.task_id)
                elif event.action == "start":
                    self._started_tasks.add(event.task_id)

    def recheck(self, given: ServiceStatus | SwarmError | None = None) -> Deferred:
        """
        Read the service now, rather than at the next poll, and act on it; a read already
        under way reads once more. Fires when done; never fails.

        @param given: what Swarm shows of the service, read for every agent at once: act
            on it instead of reading (a read under way reads once more all the same).
        """
        core = self._core
        if core.stopped or core.slot.moving:
            # A wake or a sleep in progress reads Swarm itself.
            return succeed(None)
        if self._reconcile_timer is not None and self._reconcile_timer.active():
            # The first reconciliation is waiting to try again: it is the re-read.
            self._reconcile_timer.cancel()
            self._retry_start()
            return succeed(None)
        if self._rechecking.running:
            self._recheck_again = True
            return self._rechecking.follow()
        flow = core.slot.try_begin(FlowKind.RECHECKING)
        if flow is None:
            return succeed(None)
        return self._rechecking.start(self._recheck(flow, given))

    async def _recheck(self, flow: Flow, given: ServiceStatus | SwarmError | None) -> None:
        recover = False
        try:
            self._recheck_again = True
            while self._recheck_again and flow.active:
                self._recheck_again = False
                recover = await self._check_service(flow, given)
                given = None
        finally:
            self._core.slot.end(flow)
        if recover:
            self._start_recovery()

    async def _check_service(self, flow: Flow,
                             given: ServiceStatus | SwarmError | None = None) -> bool:
        """
        Read the service once (unless C{given}) and act; return whether a task runs again
        and should be probed.
        """
        core = self._core
        try:
            status = await self._read(given)
        except UnknownService as failure:
            if flow.active:
                core.degrade(str(failure), Cause.SWARM)
            return False
        except SwarmError as failure:
            # Read again later: the engine may be restarting, or not a manager yet.
            log.info("could not read the service of {agent}: {error}",
                     agent=core.name, error=str(failure))
            if self._reread_timer is None or not self._reread_timer.active():
                self._reread_timer = core.clock.callLater(RECONCILE_RETRY,
                                                          core.report_swarm_news)
            return False
        if not flow.active:
            return False
        self._awaiting_retry = False
        core.saw_service(status)
        running = {task.id for task in status.running_tasks}
        live = {task.id for task in status.tasks if task.live}
        # Dead tasks Swarm has not recorded as ended yet (it may even show them starting,
        # then running, after the engine said they died).
        lagging = {task_id: code for task_id, code in self.dead_tasks.items()
                   if task_id in live}
        recover = await self._act(flow, status, lagging)
        # Forget what Swarm has caught up with; look again soon for the rest.
        self.dead_tasks = lagging
        self._started_tasks = {task_id for task_id in self._started_tasks
                               if task_id in live and task_id not in running}
        self._look_again_while_swarm_lags()
        self._watch_tasks()  # its tasks may have moved to or from another node
        return recover

    async def _act(self, flow: Flow, status: ServiceStatus,
                   lagging: dict[str, int | None]) -> bool:
        core = self._core
        if core.state in (AgentState.READY, AgentState.DEGRADED):
            self._seen_running.update(task.id for task in status.running_tasks
                                      if task.id not in lagging)
        # Only what Swarm still keeps in its history: an always-on agent never sleeps,
        # and its restarts would otherwise pile up here.
        self._seen_running.intersection_update(task.id for task in status.tasks)
        reaction = react(status=status, lagging=lagging, policy=core.config.policy,
                         state=core.state,
                         degraded_by_swarm=core.cause in SWARM_CAUSES,
                         wanted=core.wanted_replicas, lost=self._seen_running,
                         nodes=self._task_poll.nodes if self._task_poll is not None else {})
        if judge_service(status, lagging) is SwarmVerdict.TASK_RUNS:
            self._exhaustion_told = False
        if isinstance(reaction, Recover):
            return True
        if isinstance(reaction, SleptElsewhere):
            core.backend_running = False
            core.transition(AgentState.SLEEPING, reason="scaled to 0 outside the orchestrator")
        elif isinstance(reaction, Degrade):
            core.degrade(reaction.reason, Cause.REPLICAS if reaction.short else Cause.TASKS)
            if reaction.restarts_exhausted and not self._exhaustion_told:
                await self._restarts_exhausted(flow, status)
        return False

    async def _restarts_exhausted(self, flow: Flow, status: ServiceStatus) -> None:
        core = self._core
        self._exhaustion_told = True
        last_error = status.tasks[-1].error if status.tasks else ""
        core.emit("restart.exhausted", service=status.name,
                  attempts=status.failed_attempts, max_attempts=status.max_attempts,
                  error=last_error)
        if core.config.policy is Policy.ON_DEMAND:
            # As after a failed wake: scaled to 0, a request after wake_retry tries again
            # (from 0, so Swarm counts its attempts afresh).
            flow.become(FlowKind.SCALING_DOWN)
            await scale_to_zero_after_failure(core, self._swarm,
                                              core.reason or "Swarm gave up restarting")

    def _look_again_while_swarm_lags(self) -> None:
        if self._lag_timer is not None and self._lag_timer.active():
            return
        if not self.dead_tasks and not self._started_tasks:
            self._lag_looks = 0
            return
        self._lag_looks += 1
        if self._lag_looks > SWARM_LAG_LOOKS:
            log.warn("Swarm still shows tasks of {agent} otherwise than the engine said: "
                     "{tasks}", agent=self._core.name,
                     tasks=sorted([*self.dead_tasks, *self._started_tasks]))
            self.dead_tasks = {}
            self._started_tasks = set()
            self._lag_looks = 0
            return
        self._lag_timer = self._core.clock.callLater(SWARM_LAG_RETRY,
                                                     self._core.report_swarm_news)

    # Recovery --------------------------------------------------------------------------

    def _start_recovery(self) -> None:
        if self._recovering.running:
            return
        flow = self._core.slot.try_begin(FlowKind.RECOVERING)
        if flow is not None:
            self._recovering.start(self._recover(flow))

    async def _recover(self, flow: Flow) -> None:
        """
        A task runs again: probe it (fast, then backing off) until it answers or
        C{startup_timeout} has passed; the health loop carries on after that.
        """
        core = self._core
        started = core.clock.seconds()
        deadline = started + core.config.startup_timeout
        try:
            while True:
                health = core.config.health
                result = await self._prober.probe(core.config.backend, health.path,
                                                  health.timeout)
                if not flow.active or core.state not in (AgentState.DEGRADED,
                                                         AgentState.STARTING):
                    return
                if result.ok:
                    core.slot.end(flow)
                    core.became_ready(probe=result.detail)
                    return
                now = core.clock.seconds()
                if now >= deadline:
                    log.info("{agent} runs a task again but its probe still fails: {detail}",
                             agent=core.name, detail=result.detail)
                    return
                await deferLater(core.clock, next_probe_delay(now - started))
                if not flow.active:
                    return
        finally:
            core.slot.end(flow)
