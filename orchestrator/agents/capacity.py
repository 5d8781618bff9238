"""
The host's budget at run time: which agents hold room, the wakes waiting for room, and
the evictions made for them. The decisions are L{orchestrator.policy.capacity}'s; this
module only keeps the books and carries them out.

One L{Capacity} serves every agent, as the wake slots do: each agent's wake flow asks
it for room (L{Capacity.reserve}) before scaling up, and each agent has an
L{orchestrator.agents.occupancy.Occupancy}, which hears the agent's core like a flow
does and keeps whether it holds room. An agent is evicted through its own sleep flow (L{Occupancy.evict}: the usual
drain, WebSockets closed with 1001, its leases and registered routes ended as any
sleep ends them), never by another flow.

While nothing waits, the books cost nothing: no timer runs, and a sleeping agent is
never looked at. A timer runs only while a wake waits (for its deadline and for the
first protection that ends by the clock), and, when C{limits.min_available} is set, one
for the node's memory.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from orchestrator.agents.core import AgentCore
from orchestrator.agents.occupancy import Occupancy
from orchestrator.config.model import LimitsConfig, NodeShare
from orchestrator.events.bus import EventBus
from orchestrator.flows import cancel_call, log_unless_cancelled
from orchestrator.policy.capacity import (
    Admit,
    Budget,
    Evict,
    Occupant,
    Queue,
    Refuse,
    describe_bytes,
    make_room,
    relieve,
)
from orchestrator.policy.wake import WakeFailed
from orchestrator.status import CapacityStatus, WaitingWake
from orchestrator.swarm.values import SwarmError

log = Logger()

#: While a wake waits, look again at least this often: a request in flight that ends,
#: or a frame that ages, is noticed without an event for it.
QUEUE_RECHECK = 5.0
#: Seconds between attempts to read the node's memory while the engine does not answer.
NODE_MEMORY_RETRY = 10.0
#: Seconds between two looks at the node's available memory (C{limits.min_available}).
PRESSURE_INTERVAL = 5.0
#: An agent whose eviction did not put it to sleep (it became busy during the drain, or
#: Swarm refused the scale-down) is not chosen again for this long.
EVICTION_COOLDOWN = 10.0

#: What C{/proc/meminfo} is read from: where the orchestrator runs.
MEMINFO = "/proc/meminfo"


class NoRoom(WakeFailed):
    """
    A wake was refused room: it could never fit, the queue is full, or it waited
    C{limits.queue_timeout} in vain. The message says which (the agent's reason).
    """


def available_memory(path: str = MEMINFO) -> int | None:
    """
    The bytes of memory the kernel says are available (C{MemAvailable}), or C{None}.
    """
    try:
        with open(path, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@attrs.define
class _Waiting:
    """
    A wake that asked for room and has not been answered.
    """

    name: str
    since: float
    deadline: float
    answer: Deferred
    #: Tells the wake which phase it is in (C{capacity}, C{evicting}).
    phase: Callable[[str], None]
    #: C{agent.wake_queued} was emitted for it.
    told: bool = False
    #: What it waits for now: C{capacity} (nobody may be evicted) or C{evicting}.
    waiting_for: str = "evicting"


class Capacity(Service):
    """
    The books of the host's budget over every agent.

    @param limits: the C{limits} section (L{reconfigure} takes a new one).
    @param swarm: asked for the node's memory when C{limits.memory} is a share of it.
    @param available: reads the node's available memory (C{limits.min_available}).
    """

    def __init__(self, limits: LimitsConfig, *, clock, bus: EventBus, swarm,
                 available: Callable[[], int | None] = available_memory) -> None:
        self.setName("capacity")
        self._limits = limits
        self._clock = clock
        self._bus = bus
        self._swarm = swarm
        self._available = available
        self._members: dict[str, Occupancy] = {}
        self._waiting: list[_Waiting] = []
        #: Agents being evicted, and for whom (C{None}: the node's memory ran short).
        self._evicting: dict[str, str | None] = {}
        self._cooling: dict[str, float] = {}
        self.node_memory: int | None = None
        self._timer = None
        self._node_retry = None
        self._pressure: LoopingCall | None = None
        self._pumping = False
        self._again = False

    # Lifecycle -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._take_up(self._limits)

    def stopService(self) -> None:
        super().stopService()
        self._timer = cancel_call(self._timer)
        self._node_retry = cancel_call(self._node_retry)
        self._stop_pressure()
        waiting, self._waiting = self._waiting, []
        for entry in waiting:
            entry.answer.cancel()

    def reconfigure(self, limits: LimitsConfig) -> None:
        """
        Take up a changed budget (a reload): the next decision uses it.
        """
        self._limits = limits
        if self.running:
            self._take_up(limits)
        self.changed()

    def _take_up(self, limits: LimitsConfig) -> None:
        if isinstance(limits.memory, NodeShare) and self.node_memory is None:
            self._read_node_memory()
        if limits.min_available is None:
            self._stop_pressure()
        elif self._pressure is None:
            self._pressure = LoopingCall(self._relieve_pressure)
            self._pressure.clock = self._clock
            self._pressure.start(PRESSURE_INTERVAL, now=False).addErrback(
                log_unless_cancelled, log, "the node memory watch failed")

    def _stop_pressure(self) -> None:
        if self._pressure is not None and self._pressure.running:
            self._pressure.stop()
        self._pressure = None

    def _read_node_memory(self) -> None:
        self._node_retry = None

        def read(memory: int) -> None:
            self.node_memory = memory
            log.info("the node has {memory} of memory", memory=describe_bytes(memory))
            self.changed()

        def retry(failure) -> None:
            failure.trap(SwarmError)
            log.warn("cannot read the node's memory ({error}): wakes wait for it",
                     error=failure.getErrorMessage())
            if self.running:
                self._node_retry = self._clock.callLater(NODE_MEMORY_RETRY,
                                                         self._read_node_memory)

        reading = self._swarm.node_memory()
        reading.addCallbacks(read, retry)
        reading.addErrback(log_unless_cancelled, log, "reading the node's memory failed")

    # The budget ------------------------------------------------------------------------

    @property
    def limits(self) -> LimitsConfig:
        return self._limits

    def budget(self) -> Budget | None:
        """
        The budget in bytes, or C{None} while it is a share of a node whose memory is
        not known yet.
        """
        limits = self._limits
        memory = limits.memory
        if isinstance(memory, NodeShare):
            if self.node_memory is None:
                return None
            memory = int(self.node_memory * memory.fraction)
        return Budget(max_awake=limits.max_awake, memory=memory, min_idle=limits.min_idle,
                      min_awake=limits.min_awake)

    def occupants(self) -> list[Occupant]:
        now = self._clock.seconds()
        return [member.occupant(now) for member in self._members.values()]

    def snapshot(self) -> CapacityStatus:
        """
        The budget, its use and the wakes waiting, for the admin API, metrics and the
        dashboard.
        """
        budget = self.budget()
        awake = [o for o in self.occupants() if o.awake]
        limits = self._limits
        return CapacityStatus(
            max_awake=limits.max_awake,
            memory=None if budget is None else budget.memory,
            memory_share=limits.memory.fraction if isinstance(limits.memory, NodeShare)
            else None,
            node_memory=self.node_memory,
            awake=len(awake),
            memory_used=sum(o.cost for o in awake),
            waiting=tuple(WaitingWake(entry.name, entry.since, entry.waiting_for)
                          for entry in self._waiting),
            evicting=tuple(sorted(self._evicting)),
            max_queued=limits.max_queued,
            time=self._clock.seconds(),
        )

    # Members ---------------------------------------------------------------------------

    def join(self, core: AgentCore, evict: Callable[[], Deferred]) -> Occupancy:
        """
        Count agent C{core} in the books; C{evict} puts it to sleep for another (its sleep
        flow's eviction, firing with whether it is asleep).
        """
        member = Occupancy(self, core, evict)
        self._members[core.name] = member
        core.add_flow(member)
        return member

    def leave(self, member: Occupancy) -> None:
        if self._members.get(member.name) is member:
            del self._members[member.name]
        for entry in [entry for entry in self._waiting if entry.name == member.name]:
            self._forget(entry)
            entry.answer.cancel()
        self.changed()

    def changed(self) -> None:
        """
        Something that may make room happened (an agent slept, a lease ended, a request
        finished): waiting wakes look again. Nothing to do when none waits.
        """
        if self._waiting:
            self._pump()

    # Wakes -----------------------------------------------------------------------------

    def reserve(self, name: str, phase: Callable[[str], None]) -> Deferred:
        """
        Room for agent C{name}'s wake: a Deferred that fires once the wake may scale the
        agent up (at once when it fits; after evictions; after a wait), or fails with
        L{NoRoom}. Cancel it to stop waiting. C{phase} hears what the wake waits for.
        """
        member = self._members.get(name)
        if member is None:
            return fail(NoRoom(f"agent {name} is not counted in the budget"))
        if not self._limits.limited:
            member.granted()
            return succeed(None)
        if len(self._waiting) >= self._limits.max_queued:
            return fail(NoRoom(
                f"the host is full and {len(self._waiting)} wakes wait for room already "
                f"(limits.max_queued)"))
        now = self._clock.seconds()
        entry = _Waiting(name, now, now + self._limits.queue_timeout,
                         Deferred(lambda _: self._forget(entry)), phase)
        self._waiting.append(entry)
        self._pump()
        return entry.answer

    def _forget(self, entry: _Waiting) -> None:
        if entry in self._waiting:
            self._waiting.remove(entry)

    def _pump(self) -> None:
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._decide()
        finally:
            self._pumping = False
        self._schedule()

    def _decide(self) -> None:
        """
        Answer the waiting wakes in the order they asked, each as the policy decides.
        """
        budget = self.budget()
        if budget is None:
            return  # the node's memory is not known yet
        now = self._clock.seconds()
        for entry in list(self._waiting):
            member = self._members.get(entry.name)
            if member is None or entry.answer.called:
                self._forget(entry)
                continue
            if now >= entry.deadline:
                self._answer(entry, NoRoom(
                    f"no room for agent {entry.name} within limits.queue_timeout "
                    f"({self._limits.queue_timeout:g}s): {self._full(budget)}"))
                continue
            decision = make_room(member.occupant(now), self.occupants(), budget, now)
            if isinstance(decision, Admit):
                member.granted()
                self._answer(entry, None)
            elif isinstance(decision, Refuse):
                self._answer(entry, NoRoom(decision.reason))
            elif isinstance(decision, Evict):
                self._evict(decision, entry)
            elif isinstance(decision, Queue):
                self._wait(decision, entry, budget)

    def _answer(self, entry: _Waiting, outcome: NoRoom | None) -> None:
        self._forget(entry)
        if outcome is None:
            entry.answer.callback(None)
        else:
            entry.answer.errback(outcome)

    def _evict(self, decision: Evict, entry: _Waiting) -> None:
        entry.waiting_for = "evicting"
        entry.phase("evicting")
        for name in decision.names:
            self._put_to_sleep(name, for_agent=entry.name)

    def _wait(self, decision: Queue, entry: _Waiting, budget: Budget) -> None:
        entry.waiting_for = "evicting" if decision.room_coming else "capacity"
        entry.phase(entry.waiting_for)
        if entry.told or decision.room_coming:
            return
        entry.told = True
        self._bus.emit("agent.wake_queued", entry.name, reason="capacity",
                       position=self._waiting.index(entry) + 1, waiting=len(self._waiting),
                       blocking=dict(decision.blocking), detail=self._full(budget))

    def _put_to_sleep(self, name: str, for_agent: str | None, why: str | None = None) -> None:
        member = self._members[name]
        occupant = member.occupant(self._clock.seconds())
        self._evicting[name] = for_agent
        fields = {"for_agent": for_agent, "freed": occupant.cost,
                  "idle_seconds": round(self._clock.seconds() - occupant.last_activity, 3)}
        if why is not None:
            fields["reason"] = why
        self._bus.emit("agent.evicted", name, **fields)
        log.info("evicting {agent} to make room for {for_agent}", agent=name,
                 for_agent=for_agent or "the node")
        evicting = member.evict()
        evicting.addErrback(log_unless_cancelled, log, "evicting {agent} failed", agent=name)
        evicting.addCallback(self._evicted, name)

    def _evicted(self, asleep: bool | None, name: str) -> None:
        self._evicting.pop(name, None)
        if not asleep:
            self._cooling[name] = self._clock.seconds() + EVICTION_COOLDOWN
        self.changed()

    def cooling(self, name: str, now: float) -> bool:
        """
        Whether agent C{name}'s last eviction failed moments ago (it is not chosen again
        for L{EVICTION_COOLDOWN}).
        """
        until = self._cooling.get(name)
        if until is None:
            return False
        if until <= now:
            del self._cooling[name]
            return False
        return True

    def is_evicting(self, name: str) -> bool:
        return name in self._evicting

    def _schedule(self) -> None:
        """
        One timer while wakes wait: the first deadline, the first protection to end by
        the clock, and a look every L{QUEUE_RECHECK} seconds at most.
        """
        self._timer = cancel_call(self._timer)
        if not self._waiting or not self.running:
            return
        now = self._clock.seconds()
        budget = self.budget()
        moments = [now + QUEUE_RECHECK, *(entry.deadline for entry in self._waiting)]
        if budget is not None:
            for entry in self._waiting:
                member = self._members.get(entry.name)
                if member is None:
                    continue
                decision = make_room(member.occupant(now), self.occupants(), budget, now)
                if isinstance(decision, Queue) and decision.retry_at is not None:
                    moments.append(decision.retry_at)
        self._timer = self._clock.callLater(max(min(moments) - now, 0), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def _full(self, budget: Budget) -> str:
        awake = [o for o in self.occupants() if o.awake]
        parts = [f"{len(awake)} agents awake"]
        if budget.max_awake is not None:
            parts[0] += f" of limits.max_awake {budget.max_awake}"
        if budget.memory is not None:
            parts.append(f"{describe_bytes(sum(o.cost for o in awake))} of limits.memory "
                         f"{describe_bytes(budget.memory)} used")
        return ", ".join(parts)

    # The node's own memory -------------------------------------------------------------

    def _relieve_pressure(self) -> None:
        threshold = self._limits.min_available
        budget = self.budget()
        if threshold is None or budget is None:
            return
        # A read of /proc, which never blocks for long: done on the reactor thread.
        available = self._available()
        if available is None or available >= threshold:
            return
        now = self._clock.seconds()
        names = relieve(threshold - available, self.occupants(), budget, now)
        why = (f"the node's available memory ({describe_bytes(available)}) is under "
               f"limits.min_available ({describe_bytes(threshold)})")
        for name in names:
            self._put_to_sleep(name, for_agent=None, why=why)
