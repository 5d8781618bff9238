"""
The busy lease's arithmetic: acquire, renew, release, expire; capped, never shortened,
and never keeping an agent awake past its last lease's end.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.policy.idle import idle_deadline
from orchestrator.policy.leases import Leases, TooManyLeases, UnknownLease
from orchestrator.status import Lease

CAP = 3600.0


class LeaseTests(SynchronousTestCase):
    def test_a_lease_keeps_the_agent_until_its_end(self):
        leases, lease = Leases().acquire("a", reason="tool call", seconds=600, now=100,
                                         cap=CAP, limit=10)
        self.assertEqual(lease, Lease("a", "tool call", 100, 700))
        self.assertEqual((leases.until, leases.next_expiry), (700, 700))

    def test_a_lease_is_capped(self):
        _, lease = Leases().acquire("a", reason="", seconds=86400, now=0, cap=CAP, limit=10)
        self.assertEqual(lease.expires, CAP)

    def test_a_renewal_never_shortens_a_lease(self):
        leases, _ = Leases().acquire("a", reason="", seconds=1800, now=0, cap=CAP, limit=10)
        leases, lease = leases.renew("a", seconds=60, now=100, cap=CAP)
        self.assertEqual(lease.expires, 1800)
        leases, lease = leases.renew("a", seconds=3000, now=100, cap=CAP)
        self.assertEqual(lease.expires, 3100)

    def test_leases_end_in_order_and_the_agent_follows_the_last(self):
        leases, _ = Leases().acquire("short", reason="", seconds=10, now=0, cap=CAP, limit=10)
        leases, _ = leases.acquire("long", reason="", seconds=100, now=0, cap=CAP, limit=10)
        self.assertEqual((leases.next_expiry, leases.until), (10, 100))
        leases, ended = leases.expire(now=10)
        self.assertEqual([lease.id for lease in ended], ["short"])
        self.assertEqual(len(leases), 1)

    def test_release_and_renewal_of_an_unknown_lease_are_refused(self):
        self.assertRaises(UnknownLease, Leases().release, "nope")
        self.assertRaises(UnknownLease, Leases().renew, "nope", seconds=1, now=0, cap=CAP)

    def test_a_limit_on_leases_held_at_once(self):
        leases, _ = Leases().acquire("a", reason="", seconds=10, now=0, cap=CAP, limit=1)
        self.assertRaises(TooManyLeases, leases.acquire, "b", reason="", seconds=10, now=0,
                          cap=CAP, limit=1)

    def test_an_idle_agent_with_a_lease_sleeps_when_the_lease_ends_and_not_later(self):
        # Idle since 0, timeout 900, leased until 5000: asleep at 5000, not at 5900.
        self.assertEqual(idle_deadline(last_activity=0, in_flight=0, timeout=900, now=1000,
                                       leased_until=5000), 5000)
        self.assertIsNone(idle_deadline(last_activity=0, in_flight=0, timeout=900, now=5000,
                                        leased_until=5000))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from("abc"), st.floats(0, 2 * CAP)),
        st.tuples(st.just("renew"), st.sampled_from("abc"), st.floats(0, 2 * CAP)),
        st.tuples(st.just("release"), st.sampled_from("abc"), st.just(0.0)),
        st.tuples(st.just("wait"), st.just(""), st.floats(0, 2 * CAP)),
    ),
    max_size=40,
)


class LeasePropertyTests(SynchronousTestCase):
    @given(operations, st.floats(0, 1000))
    def test_no_sequence_shortens_a_live_lease_or_keeps_an_agent_awake_past_the_last(
            self, steps, last_activity):
        leases, now, timeout = Leases(), 0.0, 900.0
        ends: dict[str, float] = {}  # what each live lease was granted, at the most
        for action, lease_id, amount in steps:
            before = {lease.id: lease.expires for lease in leases}
            try:
                if action == "acquire" and lease_id not in before:
                    leases, lease = leases.acquire(lease_id, reason="", seconds=amount,
                                                   now=now, cap=CAP, limit=3)
                    ends[lease_id] = lease.expires
                elif action == "renew":
                    leases, lease = leases.renew(lease_id, seconds=amount, now=now, cap=CAP)
                    ends[lease_id] = lease.expires
                elif action == "release":
                    leases, _ = leases.release(lease_id)
                    ends.pop(lease_id)
                elif action == "wait":
                    now += amount
            except (UnknownLease, TooManyLeases):
                pass
            leases, ended = leases.expire(now)
            for lease in ended:
                ends.pop(lease.id)
            # A live lease never ends earlier than it was going to.
            for lease in leases:
                if lease.id in before:
                    self.assertGreaterEqual(lease.expires, before[lease.id])
                self.assertLessEqual(lease.expires, now + CAP)
            # The agent is kept awake exactly as long as its last live lease.
            self.assertEqual(leases.until, max(ends.values(), default=None))
            deadline = idle_deadline(last_activity=last_activity, in_flight=0,
                                     timeout=timeout, now=now, leased_until=leases.until)
            latest = max(last_activity + timeout, leases.until or 0.0)
            if deadline is not None:
                self.assertEqual(deadline, latest)
            else:
                self.assertGreaterEqual(now, latest)
