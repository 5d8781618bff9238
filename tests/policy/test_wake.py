"""
Judging a wake in progress from what Swarm shows.
"""

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.policy.wake import WakeFailed, next_probe_delay, wake_progress
from orchestrator.swarm.values import ServiceStatus, TaskStatus


def status(*tasks, replicas=1):
    return ServiceStatus("svc", replicas, tuple(tasks))


class WakeProgressTests(SynchronousTestCase):
    def test_running_task_means_probe_now(self):
        self.assertTrue(wake_progress(status(TaskStatus("t2", "running", "running")), frozenset()))

    def test_pending_task_means_wait(self):
        self.assertFalse(wake_progress(status(TaskStatus("t2", "pending", "running")), frozenset()))

    def test_new_rejected_task_fails_the_wake_with_swarms_reason(self):
        task = TaskStatus("t2", "rejected", "running", error="No such image: x:1")
        error = self.assertRaises(WakeFailed, wake_progress, status(task), frozenset())
        self.assertIn("No such image: x:1", str(error))

    def test_old_failed_task_is_history(self):
        old = TaskStatus("t1", "failed", "shutdown", error="exit 1")
        self.assertFalse(wake_progress(status(old), frozenset({"t1"})))

    def test_scaled_to_zero_by_someone_else_fails_the_wake(self):
        self.assertRaises(WakeFailed, wake_progress, status(replicas=0), frozenset())


class ProbeDelayTests(SynchronousTestCase):
    def test_probe_delay_is_fast_early_in_a_wake_and_backs_off(self):
        self.assertEqual([next_probe_delay(t) for t in (0, 4.9, 5, 14.9, 15, 300)],
                         [0.05, 0.05, 0.25, 0.25, 1.0, 1.0])


class DyingTaskTests(SynchronousTestCase):
    def test_task_being_shut_down_does_not_make_a_wake_ready(self):
        # Right after a scale-down Swarm still shows the old task running, desired
        # "shutdown": it answers probes for its stop grace period, then dies.
        dying = TaskStatus("t1", "running", "shutdown")
        self.assertFalse(wake_progress(status(dying), frozenset({"t1"})))
