"""
The host's budget: what an agent costs, who may be evicted, and what a wake gets
(admitted, evictions first, a wait, or a refusal).
"""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.policy.capacity import (
    Admit,
    Budget,
    Evict,
    MiB,
    Occupant,
    Protection,
    Queue,
    Refuse,
    agent_cost,
    describe_bytes,
    evictable_at,
    least_recently_used,
    make_room,
    protection,
    relieve,
)
from orchestrator.states import AgentState

NOW = 10_000.0
BUDGET = Budget(max_awake=None, memory=1024 * MiB, min_idle=60, min_awake=120)


def idle(name: str, cost: int = 256 * MiB, last_activity: float = 0.0, **changes) -> Occupant:
    """
    An awake on-demand agent that may be evicted: ready, idle, awake for long.
    """
    fields = {"awake": True, "state": AgentState.READY, "awake_since": 0.0, **changes}
    return Occupant(name=name, cost=cost, last_activity=last_activity, **fields)


def asleep(name: str, cost: int = 256 * MiB) -> Occupant:
    return Occupant(name=name, cost=cost)


class CostTests(SynchronousTestCase):
    def test_the_reservation_comes_first(self):
        self.assertEqual(agent_cost(reservation=100, limit=200, configured=300, default=400), 100)

    def test_then_the_limit(self):
        self.assertEqual(agent_cost(reservation=0, limit=200, configured=300, default=400), 200)

    def test_then_the_configured_memory(self):
        self.assertEqual(agent_cost(reservation=None, limit=None, configured=300, default=400),
                         300)

    def test_else_the_default(self):
        self.assertEqual(agent_cost(reservation=None, limit=0, configured=None, default=400),
                         400)

    def test_sizes_read_as_people_write_them(self):
        self.assertEqual(describe_bytes(256 * MiB), "256 MiB")
        self.assertEqual(describe_bytes(1536 * MiB), "1.5 GiB")
        self.assertEqual(describe_bytes(512), "512 B")


class ProtectionTests(SynchronousTestCase):
    def test_an_idle_agent_awake_for_long_may_be_evicted(self):
        self.assertIsNone(protection(idle("a"), BUDGET, NOW))

    def test_always_on_agents_never_may(self):
        self.assertEqual(protection(idle("a", always_on=True), BUDGET, NOW),
                         Protection.ALWAYS_ON)

    def test_a_starting_agent_may_not(self):
        self.assertEqual(protection(idle("a", state=AgentState.STARTING), BUDGET, NOW),
                         Protection.STARTING)

    def test_a_request_in_flight_protects(self):
        self.assertEqual(protection(idle("a", in_flight=1), BUDGET, NOW), Protection.IN_FLIGHT)

    def test_a_frame_within_min_idle_protects(self):
        self.assertEqual(protection(idle("a", last_frame=NOW - 59), BUDGET, NOW),
                         Protection.FRAMES)
        self.assertIsNone(protection(idle("a", last_frame=NOW - 60), BUDGET, NOW))

    def test_a_lease_protects_until_it_ends(self):
        self.assertEqual(protection(idle("a", leased_until=NOW + 1), BUDGET, NOW),
                         Protection.LEASED)
        self.assertIsNone(protection(idle("a", leased_until=NOW), BUDGET, NOW))

    def test_an_agent_awake_for_less_than_min_awake_may_not(self):
        self.assertEqual(protection(idle("a", awake_since=NOW - 119), BUDGET, NOW),
                         Protection.JUST_WOKE)
        self.assertIsNone(protection(idle("a", awake_since=NOW - 120), BUDGET, NOW))

    def test_an_agent_already_leaving_is_not_chosen_again(self):
        self.assertEqual(protection(idle("a", leaving=True), BUDGET, NOW), Protection.LEAVING)

    def test_the_clock_ends_the_last_of_the_timed_protections(self):
        occupant = idle("a", last_frame=NOW - 10, leased_until=NOW + 300, awake_since=NOW)
        self.assertEqual(evictable_at(occupant, BUDGET), NOW + 300)

    def test_a_request_in_flight_ends_by_no_clock(self):
        self.assertIsNone(evictable_at(idle("a", in_flight=2), BUDGET))


class MakeRoomExamples(SynchronousTestCase):
    """
    One example of each decision.
    """

    def test_a_wake_that_fits_is_admitted(self):
        self.assertEqual(make_room(asleep("new"), [idle("a"), idle("b")], BUDGET, NOW), Admit())

    def test_the_least_recently_active_are_evicted_first(self):
        awake = [idle("a", last_activity=30), idle("b", last_activity=10),
                 idle("c", last_activity=20), idle("d", last_activity=40)]
        decision = make_room(asleep("new"), awake, BUDGET, NOW)
        self.assertEqual(decision, Evict(("b",), 256 * MiB))

    def test_as_many_are_evicted_as_it_takes_to_free_enough(self):
        awake = [idle("a", last_activity=1), idle("b", last_activity=2),
                 idle("c", cost=512 * MiB, last_activity=3)]
        decision = make_room(asleep("new", cost=768 * MiB), awake, BUDGET, NOW)
        self.assertEqual(decision, Evict(("a", "b", "c"), 1024 * MiB))

    def test_a_count_budget_evicts_one_for_one(self):
        budget = attrs.evolve(BUDGET, max_awake=2, memory=None)
        decision = make_room(asleep("new"), [idle("a", last_activity=5), idle("b")], budget, NOW)
        self.assertEqual(decision, Evict(("b",), 256 * MiB))

    def test_protected_agents_are_passed_over(self):
        awake = [idle("busy", in_flight=1, last_activity=1), idle("streaming", last_frame=NOW,
                 last_activity=2), idle("leased", leased_until=NOW + 60, last_activity=3),
                 idle("idle", last_activity=4)]
        self.assertEqual(make_room(asleep("new"), awake, BUDGET, NOW), Evict(("idle",), 256 * MiB))

    def test_when_nobody_may_be_evicted_the_wake_waits(self):
        awake = [idle(name, in_flight=1) for name in "abc"] + [
            idle("d", awake_since=NOW - 20)]
        decision = make_room(asleep("new"), awake, BUDGET, NOW)
        self.assertEqual(decision, Queue(retry_at=NOW + 100, blocking=(
            ("a", "in_flight"), ("b", "in_flight"), ("c", "in_flight"), ("d", "just_woke"))))

    def test_nobody_is_evicted_when_evicting_all_who_may_be_would_not_do(self):
        awake = [idle("a"), idle("b", in_flight=1), idle("c", in_flight=1),
                 idle("d", in_flight=1)]
        decision = make_room(asleep("new", cost=512 * MiB), awake, BUDGET, NOW)
        self.assertIsInstance(decision, Queue)

    def test_a_wake_waits_for_the_agents_leaving_to_be_asleep(self):
        awake = [idle("a", leaving=True), idle("b"), idle("c"), idle("d")]
        self.assertEqual(make_room(asleep("new"), awake, BUDGET, NOW), Queue(room_coming=True))

    def test_an_agent_bigger_than_the_budget_is_refused(self):
        decision = make_room(asleep("huge", cost=2048 * MiB), [], BUDGET, NOW)
        self.assertEqual(decision, Refuse("agent huge needs 2 GiB of memory, more than "
                                          "limits.memory (1 GiB) allows for all agents"))

    def test_an_agent_the_always_on_agents_leave_no_room_for_is_refused(self):
        awake = [idle("a", cost=900 * MiB, always_on=True), idle("b")]
        decision = make_room(asleep("new"), awake, BUDGET, NOW)
        self.assertIsInstance(decision, Refuse)
        self.assertIn("always-on agents leave 124 MiB", decision.reason)

    def test_always_on_agents_count_toward_max_awake(self):
        budget = Budget(max_awake=1)
        decision = make_room(asleep("new"), [idle("a", always_on=True)], budget, NOW)
        self.assertEqual(decision, Refuse("the 1 always-on agents take every one of the 1 "
                                          "places of limits.max_awake"))

    def test_without_limits_everything_is_admitted(self):
        awake = [idle(str(number)) for number in range(100)]
        self.assertEqual(make_room(asleep("new"), awake, Budget(), NOW), Admit())


class RelieveTests(SynchronousTestCase):
    def test_the_least_recently_used_free_what_is_needed(self):
        awake = [idle("a", last_activity=2), idle("b", last_activity=1), idle("c")]
        self.assertEqual(relieve(300 * MiB, awake, BUDGET, NOW), ("c", "b"))

    def test_agents_leaving_already_count(self):
        awake = [idle("a", leaving=True), idle("b")]
        self.assertEqual(relieve(200 * MiB, awake, BUDGET, NOW), ())

    def test_protected_agents_are_never_chosen(self):
        self.assertEqual(relieve(1024 * MiB, [idle("a", in_flight=1)], BUDGET, NOW), ())


# Properties -------------------------------------------------------------------------------

COSTS = st.sampled_from([64 * MiB, 128 * MiB, 256 * MiB, 512 * MiB, 1024 * MiB])


@st.composite
def occupants(draw, name: str) -> Occupant:
    awake = draw(st.booleans())
    maybe_time = st.none() | st.floats(min_value=NOW - 500, max_value=NOW + 500)
    return Occupant(
        name=name,
        cost=draw(COSTS),
        always_on=draw(st.booleans()) and awake and draw(st.booleans()),
        awake=awake,
        leaving=awake and draw(st.integers(0, 5)) == 0,
        state=draw(st.sampled_from(list(AgentState))) if awake else AgentState.SLEEPING,
        last_activity=draw(st.floats(min_value=0, max_value=NOW)),
        in_flight=draw(st.sampled_from([0, 0, 0, 1, 3])),
        last_frame=draw(maybe_time),
        leased_until=draw(maybe_time),
        awake_since=draw(maybe_time),
    )


@st.composite
def situations(draw):
    names = draw(st.lists(st.sampled_from("abcdefghijkl"), unique=True, max_size=10))
    others = [draw(occupants(name)) for name in names]
    candidate = asleep("new", cost=draw(COSTS))
    budget = Budget(
        max_awake=draw(st.none() | st.integers(1, 8)),
        memory=draw(st.none() | st.sampled_from([256 * MiB, 512 * MiB, 1024 * MiB,
                                                  2048 * MiB, 4096 * MiB])),
        min_idle=draw(st.sampled_from([0.0, 30.0, 60.0])),
        min_awake=draw(st.sampled_from([0.0, 60.0, 300.0])),
    )
    return candidate, others, budget


def awake_of(others):
    return [o for o in others if o.awake]


class MakeRoomProperties(SynchronousTestCase):
    @given(situations())
    def test_never_evicts_a_protected_agent(self, situation):
        candidate, others, budget = situation
        decision = make_room(candidate, others, budget, NOW)
        if isinstance(decision, Evict):
            by_name = {o.name: o for o in others}
            for name in decision.names:
                self.assertTrue(by_name[name].awake)
                self.assertIsNone(protection(by_name[name], budget, NOW), name)
                self.assertNotEqual(name, candidate.name)

    @given(situations())
    def test_evicts_the_fewest_least_recently_used_that_free_enough(self, situation):
        candidate, others, budget = situation
        decision = make_room(candidate, others, budget, NOW)
        if not isinstance(decision, Evict):
            return
        staying = [o for o in awake_of(others) if not o.leaving]
        evictable = least_recently_used(o for o in staying if protection(o, budget, NOW) is None)
        chosen = list(decision.names)
        # The least recently used first, in that order...
        self.assertEqual([o.name for o in evictable[:len(chosen)]], chosen)

        def fits_without(names):
            left = [o for o in staying if o.name not in names]
            return budget.fits(len(left) + 1, sum(o.cost for o in left) + candidate.cost)

        # ...enough of them to make room once they are asleep...
        self.assertTrue(fits_without(set(chosen)))
        # ...and no fewer.
        self.assertFalse(fits_without(set(chosen[:-1])))
        self.assertEqual(decision.freed, sum(o.cost for o in staying if o.name in chosen))

    @given(situations())
    def test_never_evicts_for_an_agent_that_does_not_fit_at_all(self, situation):
        candidate, others, budget = situation
        permanent = [o for o in awake_of(others) if o.always_on]
        fits_at_all = budget.fits(len(permanent) + 1,
                                  sum(o.cost for o in permanent) + candidate.cost)
        decision = make_room(candidate, others, budget, NOW)
        self.assertEqual(isinstance(decision, Refuse), not fits_at_all)

    @given(situations())
    def test_admits_only_what_fits_beside_every_agent_holding_room(self, situation):
        candidate, others, budget = situation
        awake = awake_of(others)
        fits_now = budget.fits(len(awake) + 1, sum(o.cost for o in awake) + candidate.cost)
        decision = make_room(candidate, others, budget, NOW)
        if not isinstance(decision, Refuse):
            self.assertEqual(isinstance(decision, Admit), fits_now)

    @given(situations())
    def test_waits_only_when_evicting_every_evictable_agent_would_not_do(self, situation):
        candidate, others, budget = situation
        decision = make_room(candidate, others, budget, NOW)
        if not isinstance(decision, Queue) or decision.room_coming:
            return
        left = [o for o in awake_of(others) if not o.leaving
                and protection(o, budget, NOW) is not None]
        self.assertFalse(budget.fits(len(left) + 1, sum(o.cost for o in left) + candidate.cost))

    @given(situations(), st.randoms(use_true_random=False))
    def test_the_order_agents_are_listed_in_does_not_matter(self, situation, random):
        candidate, others, budget = situation
        shuffled = list(others)
        random.shuffle(shuffled)
        self.assertEqual(make_room(candidate, shuffled, budget, NOW),
                         make_room(candidate, others, budget, NOW))

    @given(situations())
    def test_a_retry_is_never_in_the_past(self, situation):
        candidate, others, budget = situation
        decision = make_room(candidate, others, budget, NOW)
        if isinstance(decision, Queue) and decision.retry_at is not None:
            self.assertGreater(decision.retry_at, NOW)

    @given(situations(), st.integers(0, 4096 * MiB))
    def test_relief_never_chooses_a_protected_agent(self, situation, needed):
        _, others, budget = situation
        by_name = {o.name: o for o in others}
        for name in relieve(needed, others, budget, NOW):
            self.assertTrue(by_name[name].awake)
            self.assertIsNone(protection(by_name[name], budget, NOW))
