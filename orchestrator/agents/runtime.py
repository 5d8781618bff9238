"""
One agent's runtime: the face the proxy, the relay, the admin API and the registry see.

It composes the agent's core (state, activity, waiters, the flow slot) with one
collaborator per flow: waking (L{orchestrator.agents.wake}), the idle sleep
(L{orchestrator.agents.sleep}), the health loop (L{orchestrator.agents.health}) and
keeping in step with Swarm (L{orchestrator.agents.sync}). The decisions are the policy
layer's (L{orchestrator.policy}); this module only wires them up.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred

from orchestrator.agents.capacity import Capacity
from orchestrator.agents.core import AgentCore, IAgentFlow
from orchestrator.agents.drain import ConnectionRegistry
from orchestrator.agents.health import HealthWatch
from orchestrator.agents.leases import LeaseKeeper
from orchestrator.agents.sleep import Sleeping
from orchestrator.agents.sync import SwarmSync
from orchestrator.agents.wake import Waking
from orchestrator.config.model import AgentConfig, Policy
from orchestrator.events.bus import EventBus
from orchestrator.http.client import BackendPool
from orchestrator.policy.admission import (
    Admission,
    admit,
    path_is_ignored,
    user_agent_is_ignored,
)
from orchestrator.states import AgentState
from orchestrator.status import AgentStatus
from orchestrator.swarm.values import ServiceStatus, SwarmError, SwarmEvent


class Agent:
    """
    The live counterpart of an L{AgentConfig}.

    @ivar connections: the agent's open relayed connections (WebSockets), drained when it
        sleeps.
    @ivar pool: keep-alive connections to the backend, closed when the agent sleeps so no
        request ever goes to a task that is gone.
    """

    def __init__(self, config: AgentConfig, *, swarm, prober, bus: EventBus, reactor,
                 wake_slots=None, capacity: Capacity | None = None,
                 task_poll=None) -> None:
        """
        @param wake_slots: a L{DeferredSemaphore} shared by all agents that caps the wakes
            in progress at once, so a burst over many agents does not stampede Swarm.
        @param capacity: the host's budget, shared by all agents: a wake asks it for room,
            and it may put this agent to sleep to make room for another.
        @param task_poll: the awake agents' tasks read together on every node
            (L{orchestrator.agents.taskpoll.TaskPoll}), shared by all agents.
        """
        self.pool = BackendPool(reactor)
        self.connections = ConnectionRegistry()
        core = self._core = AgentCore(config, bus=bus, clock=reactor)
        self._waking = Waking(core, swarm=swarm, prober=prober, wake_slots=wake_slots,
                              capacity=capacity)
        self._sleeping = Sleeping(core, swarm=swarm, pool=self.pool,
                                  connections=self.connections)
        self._sync = SwarmSync(core, swarm=swarm, prober=prober, task_poll=task_poll)
        self.leases = LeaseKeeper(core)
        for flow in (self._waking, self._sleeping, HealthWatch(core, prober=prober),
                     self._sync, self.leases):
            core.add_flow(flow)
        self._occupancy = (None if capacity is None
                           else capacity.join(core, evict=self._sleeping.evict))

    # What it is ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def config(self) -> AgentConfig:
        return self._core.config

    @property
    def state(self) -> AgentState:
        return self._core.state

    @property
    def reason(self) -> str | None:
        return self._core.reason

    @property
    def backend_running(self) -> bool:
        """
        Whether a task is believed to run: a request can be forwarded even though the
        agent is not C{ready}.
        """
        return self._core.backend_running

    @property
    def down_addresses(self) -> frozenset[str]:
        """
        The addresses of its service's tasks that Swarm last showed not running (and no
        running task has): where a backend name's DNS may still lead for a moment, so
        connections try them last.
        """
        return self._core.down_addresses

    @property
    def last_activity(self) -> float:
        return self._core.last_activity

    @property
    def in_flight(self) -> int:
        return self._core.in_flight

    @property
    def last_frame(self) -> float | None:
        """
        When a WebSocket frame was last relayed to or from the agent, if ever.
        """
        return self._core.last_frame

    def status(self) -> AgentStatus:
        """
        A snapshot of the agent, for every reader outside the runtime.
        """
        return self._core.status(estimated_wait=self._waking.estimated_wait(),
                                 connections=len(self.connections),
                                 sleeps_at=self._sleeping.sleeps_at(),
                                 recent_wakes=self._waking.recent,
                                 leases=tuple(self.leases.leases))

    def health(self) -> dict:
        """
        The agent's state with the detailed reason (L{AgentStatus.health_body}): for
        the admin API and logs.
        """
        return self.status().health_body()

    def public_health(self) -> dict:
        """
        The body of C{/api/health} and of the proxy's 503 and 502 answers
        (L{AgentStatus.public_body}): the reason without Swarm's words.
        """
        return self.status().public_body()

    # Requests --------------------------------------------------------------------------

    def is_ignored(self, path: str, user_agent: str) -> bool:
        """
        Whether a request comes from an uptime monitor: it neither wakes nor keeps awake.
        """
        idle = self._core.config.idle
        return path_is_ignored(path, idle.ignore_paths) or (
            bool(user_agent) and user_agent_is_ignored(user_agent, idle.ignore_user_agents)
        )

    def admission(self, ignored: bool) -> Admission:
        """
        What to do with a request now (the policy's decision; nothing is started).
        """
        core = self._core
        return admit(policy=core.config.policy, state=core.state,
                     backend_running=core.backend_running, ignored=ignored,
                     now=core.clock.seconds(), wake_allowed_at=core.wake_allowed_at)

    def admit(self, ignored: bool) -> Admission:
        """
        Decide a request's fate and carry out a L{Admission.WAKE} at once, so the next
        request already sees C{starting} (one scale call for any burst); a wake that
        completes at once is the agent's business, and the request is forwarded.
        """
        admission = self.admission(ignored)
        if admission is Admission.WAKE:
            self.wake(reason="request")
            if self._core.state is AgentState.READY:
                return Admission.FORWARD
        return admission

    def request_started(self) -> None:
        self._core.in_flight += 1
        self.touch()

    def request_finished(self) -> None:
        self._core.in_flight -= 1
        self.touch()
        if self._core.in_flight == 0 and self._occupancy is not None:
            self._occupancy.idle()

    def touch(self) -> None:
        """
        Record activity now (activity during a drain calls the sleep off).
        """
        core = self._core
        core.last_activity = core.clock.seconds()

    def frame_relayed(self) -> None:
        """
        A WebSocket data frame was relayed to or from the agent: activity, and a sign it
        is busy (an agent that relayed one within C{limits.min_idle} is never evicted).
        """
        core = self._core
        core.last_activity = core.last_frame = core.clock.seconds()

    # Acting on it ----------------------------------------------------------------------

    def wake(self, reason: str) -> Deferred:
        """
        Wake the agent (nothing if it is ready); fires when the wake is over.
        """
        return self._waking.wake(reason)

    def sleep(self, reason: str) -> Deferred:
        """
        Drain the agent and scale it to 0 now (an operator's order; after a wake in
        progress). Fires once it is asleep. Only for on-demand agents: Swarm owns the
        others.
        """
        if self._core.config.policy is not Policy.ON_DEMAND:
            raise ValueError(f"agent {self.name!r} is always-on: Swarm owns its lifecycle")
        return self._sleeping.sleep(reason)

    def take_cold_start(self) -> int | None:
        """
        Milliseconds the last wake took, once: for the first response after a wake.
        """
        return self._waking.take_cold_start()

    def when_settled(self) -> Deferred:
        return self._core.when_settled()

    def release_waiters(self) -> None:
        self._core.release_waiters()

    # Lifecycle -------------------------------------------------------------------------

    def observe(self, flow: IAgentFlow) -> None:
        """
        Have C{flow} hear what the agent's flows hear (its transitions, its settling,
        its leases changing): for those who keep something per agent.
        """
        self._core.add_flow(flow)

    def start(self, status: ServiceStatus | SwarmError | None = None,
              retry: bool = False) -> Deferred:
        """
        Reconcile with Swarm; fires when the agent's state is known. C{status} is what
        a read for every agent at once showed of its service (or the error it failed
        with; C{retry}: that read is tried again); without it, the agent reads its own.
        """
        return self._sync.start(status, retry=retry)

    def service_changed(self, events: Iterable[SwarmEvent] = (),
                        status: ServiceStatus | SwarmError | None = None) -> None:
        """
        Swarm reported news about the agent's service (none after the event stream
        reconnected): a wake in progress looks again at once; otherwise the service is
        read now rather than at the next poll, and the agent acts on what it shows. With
        C{status} (read for every agent at once), the agent acts on it without a read.
        """
        if status is None:
            self._core.report_swarm_news(events)
        else:
            self._sync.recheck(status)

    def reconfigure(self, config: AgentConfig) -> None:
        """
        Take up a changed configuration (a reload), keeping the agent's state, activity
        and connections. A changed service or policy needs a new L{Agent} instead.
        """
        self._core.reconfigure(config)

    def stop(self) -> None:
        """
        Stop every timer and flow. Never scales anything.
        """
        self._core.stop()

    def retire(self) -> Deferred:
        """
        The agent is gone from the configuration: stop it, answer whoever waits for it,
        and drain its relayed connections (WebSockets get 1001) within its drain
        timeout. Fires once they are closed.
        """
        self.stop()
        self.release_waiters()
        return self.connections.drain(self._core.config.idle.drain_timeout, self._core.clock)
