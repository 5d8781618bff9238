"""
Each agent's health probes on a phase of its own within the interval.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.policy.probes import next_probe, probe_phase

NAMES = st.text(min_size=1, max_size=40)
INTERVALS = st.sampled_from([0.5, 1.0, 10.0, 30.0, 3600.0])


class ProbePhaseTests(SynchronousTestCase):
    @given(NAMES, INTERVALS)
    def test_the_phase_is_within_the_interval_and_always_the_same(self, name, interval):
        phase = probe_phase(name, interval)
        self.assertTrue(0 <= phase < interval)
        self.assertEqual(phase, probe_phase(name, interval))

    @given(NAMES, INTERVALS, st.floats(min_value=0, max_value=2e9))
    def test_the_next_probe_is_on_the_phase_within_one_interval(self, name, interval, now):
        delay = next_probe(name, interval, now)
        self.assertTrue(0 < delay <= interval)
        offset = (now + delay - probe_phase(name, interval)) % interval
        self.assertLess(min(offset, interval - offset), 1e-3 * interval + 1e-6)

    def test_a_thousand_agents_are_spread_over_the_interval(self):
        # Ten slots of a second each: none gets much more than its tenth.
        slots = Counter(int(probe_phase(f"agent{number:04}", 10.0)) for number in range(1000))
        self.assertEqual(sorted(slots), list(range(10)))
        self.assertLess(max(slots.values()), 140)
