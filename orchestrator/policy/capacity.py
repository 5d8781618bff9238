"""
The host's budget of awake agents, and whom to put to sleep to make room for a wake:
pure functions of the agents' snapshots and the budget, returning a frozen decision that
L{orchestrator.agents.capacity} carries out.

An agent costs its service's memory reservation (else its limit, else the agent's
C{memory:}, else C{limits.default_memory}). Every agent that holds room (a task is, or
may be, running for it) counts against C{limits.max_awake} and C{limits.memory},
always-on agents included: they use the host too. A wake is admitted when it fits; when
it does not, the least recently active agents that may be evicted are put to sleep
first, the fewest that free enough; when none may, the wake waits; a wake that could not
fit even with every on-demand agent asleep is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from orchestrator.states import AgentState

MiB = 1024 * 1024


@attrs.frozen
class Budget:
    """
    The limits the awake agents must keep within (C{None}: no limit of that kind), and
    the protections against eviction.
    """

    #: Agents awake at once.
    max_awake: int | None = None
    #: Bytes of memory the awake agents may reserve between them.
    memory: int | None = None
    #: An agent that relayed a WebSocket frame less than this many seconds ago is busy.
    min_idle: float = 60.0
    #: An agent awake for less than this many seconds is not evicted (anti-thrash).
    min_awake: float = 120.0

    def fits(self, count: int, memory: int) -> bool:
        """
        Whether C{count} awake agents that cost C{memory} bytes in all keep within it.
        """
        return ((self.max_awake is None or count <= self.max_awake)
                and (self.memory is None or memory <= self.memory))


@attrs.frozen
class Occupant:
    """
    One agent as the budget sees it, at one moment.
    """

    name: str
    #: Bytes it costs while awake (L{agent_cost}).
    cost: int
    always_on: bool = False
    #: It holds room: a task runs, or may run, for it.
    awake: bool = False
    #: It is being put to sleep (an eviction, an idle sleep, an operator's order): its
    #: room is free once it is asleep.
    leaving: bool = False
    state: AgentState = AgentState.SLEEPING
    #: When it last had traffic (its rank among the least recently used).
    last_activity: float = 0.0
    #: Requests being relayed to it now.
    in_flight: int = 0
    #: When a WebSocket frame was last relayed to or from it.
    last_frame: float | None = None
    #: When its last busy lease ends.
    leased_until: float | None = None
    #: Since when it holds room.
    awake_since: float | None = None
    #: C{False}: the orchestrator may not put it to sleep now (its last eviction did not
    #: put it to sleep, moments ago).
    evictable: bool = True


# What to do about a wake -----------------------------------------------------------------


@attrs.frozen
class Admit:
    """
    The wake fits: scale the agent up.
    """


@attrs.frozen
class Evict:
    """
    Put C{names} to sleep (least recently active first), which frees C{freed} bytes and
    as many places; then ask again: the wake fits once they are asleep.
    """

    names: tuple[str, ...]
    freed: int


@attrs.frozen
class Queue:
    """
    No room, and nobody may be evicted to make it now: wait, and ask again when an agent
    leaves, a protection ends, or at C{retry_at} (when the first protection known to end
    by the clock ends; C{None}: none does).

    @ivar room_coming: agents are being put to sleep already, and once they are asleep
        the wake fits: it waits for them, not for someone to become evictable.
    @ivar blocking: the awake on-demand agents that cannot be evicted now, with why
        (L{Protection}), for the operator.
    """

    retry_at: float | None = None
    room_coming: bool = False
    blocking: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Refuse:
    """
    The wake could not fit even with every on-demand agent asleep: C{reason} says why.
    """

    reason: str


Decision = Admit | Evict | Queue | Refuse


class Protection:
    """
    Why an awake agent may not be evicted now (the values of L{protection}).
    """

    ALWAYS_ON = "always_on"
    STARTING = "starting"
    IN_FLIGHT = "in_flight"
    FRAMES = "frames"
    LEASED = "leased"
    JUST_WOKE = "just_woke"
    LEAVING = "leaving"
    RETRYING = "retrying"


def agent_cost(*, reservation: int | None, limit: int | None, configured: int | None,
               default: int) -> int:
    """
    What an agent costs: its service's memory reservation, else its limit, else its
    configured C{memory:}, else the default (the first of them that is set and above 0).
    """
    for value in (reservation, limit, configured):
        if value:
            return value
    return default


def protection(occupant: Occupant, budget: Budget, now: float) -> str | None:
    """
    Why C{occupant} (awake) may not be evicted at C{now}, or C{None} if it may.
    """
    if occupant.always_on:
        return Protection.ALWAYS_ON
    if occupant.leaving:
        return Protection.LEAVING
    if not occupant.evictable:
        return Protection.RETRYING
    if occupant.state is AgentState.STARTING:
        return Protection.STARTING
    if occupant.in_flight > 0:
        return Protection.IN_FLIGHT
    if occupant.last_frame is not None and now - occupant.last_frame < budget.min_idle:
        return Protection.FRAMES
    if occupant.leased_until is not None and occupant.leased_until > now:
        return Protection.LEASED
    if occupant.awake_since is not None and now - occupant.awake_since < budget.min_awake:
        return Protection.JUST_WOKE
    return None


def evictable_at(occupant: Occupant, budget: Budget) -> float | None:
    """
    When the clock alone makes C{occupant} evictable (its last frame old enough, its
    lease over, awake long enough), or C{None} if something else protects it (a request
    in flight, a wake, a sleep under way, being always-on).
    """
    if (occupant.always_on or occupant.leaving or occupant.in_flight > 0
            or not occupant.evictable or occupant.state is AgentState.STARTING):
        return None
    moments = [0.0]
    if occupant.last_frame is not None:
        moments.append(occupant.last_frame + budget.min_idle)
    if occupant.leased_until is not None:
        moments.append(occupant.leased_until)
    if occupant.awake_since is not None:
        moments.append(occupant.awake_since + budget.min_awake)
    return max(moments)


def least_recently_used(occupants: Iterable[Occupant]) -> list[Occupant]:
    """
    C{occupants}, the least recently active first (ties by name, so the order is total).
    """
    return sorted(occupants, key=lambda occupant: (occupant.last_activity, occupant.name))


def make_room(candidate: Occupant, occupants: Iterable[Occupant], budget: Budget,
              now: float) -> Decision:
    """
    What to do about C{candidate}'s wake, given every other agent (C{occupants}; the
    candidate's own entry, if there, is ignored) and the budget, at C{now}.

    Two sums are compared with the budget: the present one (every agent that holds room,
    those leaving included: their tasks may still run), which a wake must fit to be
    admitted, so the budget holds at every moment; and the coming one (without those
    leaving), which decides whether more must be evicted.
    """
    others = [o for o in occupants if o.name != candidate.name and o.awake]
    cost = candidate.cost
    permanent = [o for o in others if o.always_on]
    if not budget.fits(len(permanent) + 1, sum(o.cost for o in permanent) + cost):
        return Refuse(_refusal(candidate, permanent, budget))
    present_count, present_memory = len(others), sum(o.cost for o in others)
    if budget.fits(present_count + 1, present_memory + cost):
        return Admit()
    staying = [o for o in others if not o.leaving]
    count, memory = len(staying) + 1, sum(o.cost for o in staying) + cost
    if budget.fits(count, memory):
        return Queue(room_coming=True)
    evictable, blocking = [], []
    for occupant in staying:
        why = protection(occupant, budget, now)
        if why is None:
            evictable.append(occupant)
        elif not occupant.always_on:
            blocking.append((occupant.name, why))
    chosen: list[Occupant] = []
    for occupant in least_recently_used(evictable):
        chosen.append(occupant)
        count, memory = count - 1, memory - occupant.cost
        if budget.fits(count, memory):
            return Evict(tuple(o.name for o in chosen), sum(o.cost for o in chosen))
    ends = [when for when in (evictable_at(o, budget) for o in staying) if when is not None
            and when > now]
    return Queue(retry_at=min(ends, default=None),
                 room_coming=any(o.leaving for o in others),
                 blocking=tuple(sorted(blocking)))


def relieve(needed: int, occupants: Iterable[Occupant], budget: Budget,
            now: float) -> tuple[str, ...]:
    """
    Whom to put to sleep to free C{needed} bytes (the host's own memory runs short):
    the fewest least recently active evictable agents that free that much, or as many
    as may be evicted if they cannot; those leaving already count as freeing theirs.
    """
    awake = [o for o in occupants if o.awake]
    needed -= sum(o.cost for o in awake if o.leaving and not o.always_on)
    chosen: list[str] = []
    for occupant in least_recently_used(
            o for o in awake if protection(o, budget, now) is None):
        if needed <= 0:
            break
        chosen.append(occupant.name)
        needed -= occupant.cost
    return tuple(chosen)


def _refusal(candidate: Occupant, permanent: list[Occupant], budget: Budget) -> str:
    cost = candidate.cost
    if budget.memory is not None and cost > budget.memory:
        return (f"agent {candidate.name} needs {describe_bytes(cost)} of memory, more than "
                f"limits.memory ({describe_bytes(budget.memory)}) allows for all agents")
    if budget.max_awake is not None and len(permanent) + 1 > budget.max_awake:
        return (f"the {len(permanent)} always-on agents take every one of the "
                f"{budget.max_awake} places of limits.max_awake")
    used = sum(o.cost for o in permanent)
    return (f"agent {candidate.name} needs {describe_bytes(cost)} of memory, and the "
            f"always-on agents leave {describe_bytes(max((budget.memory or 0) - used, 0))} "
            f"of limits.memory ({describe_bytes(budget.memory or 0)})")


def describe_bytes(size: int) -> str:
    """
    C{268435456} -> C{"256 MiB"}; C{1610612736} -> C{"1.5 GiB"}.
    """
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", MiB), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"
