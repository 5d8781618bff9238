"""
One agent's runtime as a whole: stopping it.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import make_agent


class StopTests(SynchronousTestCase):
    def test_stop_never_scales(self):
        fixture = make_agent()
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(0.05)
        fixture.agent.stop()
        fixture.clock.advance(10_000)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1)])

    def test_stop_cancels_a_wake_in_progress(self):
        fixture = make_agent(healthy=False)
        fixture.agent.admit(ignored=False)
        fixture.agent.stop()
        probes = fixture.prober.probes
        fixture.clock.advance(100)
        self.assertEqual(fixture.prober.probes, probes)
        self.assertEqual(fixture.clock.getDelayedCalls(), [])
