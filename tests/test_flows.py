"""
The small mechanisms every flow shares.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.flows import Running, backoff_delay, cancel_call, follow


class FlowMechanismTests(SynchronousTestCase):
    def test_follow_fires_with_none_and_leaves_the_result_alone(self):
        deferred = Deferred()
        follower = follow(deferred)
        deferred.callback("result")
        self.assertIsNone(self.successResultOf(follower))
        self.assertEqual(self.successResultOf(deferred), "result")

    def test_cancel_call_cancels_only_what_is_pending(self):
        clock = Clock()
        call = clock.callLater(1, lambda: None)
        self.assertIsNone(cancel_call(call))
        self.assertFalse(call.active())
        cancel_call(call)  # cancelled already: nothing
        cancel_call(None)

    def test_backoff_doubles_up_to_its_cap(self):
        self.assertEqual([backoff_delay(n, 0.5, 4) for n in range(6)], [0.5, 1, 2, 4, 4, 4])
        self.assertEqual(backoff_delay(10_000, 1, 60), 60)


class RunningTests(SynchronousTestCase):
    def test_a_run_is_kept_while_it_runs_and_followed(self):
        running = Running(Logger(), "failed")
        gate = Deferred()

        async def work():
            await gate

        done = running.start(work())
        self.assertTrue(running.running)
        follower = running.follow()
        gate.callback(None)
        self.successResultOf(done)
        self.successResultOf(follower)
        self.assertFalse(running.running)

    def test_a_run_that_ends_at_once_is_not_kept(self):
        running = Running(Logger(), "failed")

        async def work():
            await succeed(None)

        self.successResultOf(running.start(work()))
        self.assertFalse(running.running)
        self.successResultOf(running.follow())

    def test_a_cancelled_run_is_no_error(self):
        running = Running(Logger(), "failed")

        async def work():
            await Deferred()

        done = running.start(work())
        running.cancel()
        self.successResultOf(done)
        self.assertFalse(running.running)
        self.assertEqual(self.flushLoggedErrors(CancelledError), [])

    def test_a_failed_run_is_logged(self):
        running = Running(Logger(), "it failed")

        async def work():
            raise ValueError("boom")

        self.successResultOf(running.start(work()))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
