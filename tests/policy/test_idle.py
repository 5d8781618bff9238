"""
When an idle on-demand agent sleeps.
"""

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.policy.idle import idle_deadline


class IdleTests(SynchronousTestCase):
    def test_idle_long_enough_sleeps(self):
        self.assertIsNone(idle_deadline(last_activity=0, in_flight=0, timeout=900, now=900))

    def test_recent_activity_moves_the_deadline(self):
        self.assertEqual(idle_deadline(last_activity=100, in_flight=0, timeout=900, now=900), 1000)

    def test_request_in_flight_keeps_awake(self):
        self.assertEqual(idle_deadline(last_activity=0, in_flight=1, timeout=900, now=5000), 5900)
