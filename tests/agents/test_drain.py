"""
Draining open connections: ask them to go away, abort stragglers after the timeout.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.drain import ConnectionRegistry
from tests.helpers import DrainableConnection


class DrainTests(SynchronousTestCase):
    def test_empty_registry_drains_at_once(self):
        self.assertEqual(self.successResultOf(ConnectionRegistry().drain(30, Clock())), 0)

    def test_drain_waits_for_connections_to_close(self):
        clock, registry = Clock(), ConnectionRegistry()
        connection = DrainableConnection(registry)
        drained = registry.drain(30, clock)
        self.assertTrue(connection.asked)
        self.assertNoResult(drained)
        connection.close()
        self.assertEqual(self.successResultOf(drained), 0)
        self.assertFalse(connection.aborted)

    def test_stragglers_are_aborted_after_the_timeout(self):
        clock, registry = Clock(), ConnectionRegistry()
        polite, stubborn = DrainableConnection(registry), DrainableConnection(registry)
        drained = registry.drain(30, clock)
        polite.close()
        clock.advance(29)
        self.assertNoResult(drained)
        clock.advance(1)
        self.assertEqual(self.successResultOf(drained), 1)
        self.assertTrue(stubborn.aborted)
        self.assertFalse(polite.aborted)
        self.assertEqual(len(registry), 0)
