"""
How orchestrator-ctl shows the host's capacity: sizes, a budget beside its use, the
wakes waiting and the agents evicted to make room.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.cli.render import capacity_text, size

GiB = 1024 ** 3


class SizeTests(SynchronousTestCase):
    def test_sizes(self):
        self.assertEqual([size(None), size(512), size(1536), size(3 * 2 ** 29),
                          size(5 * 1024 * GiB)],
                         ["-", "512 B", "1.5 KiB", "1.5 GiB", "5120.0 GiB"])


class CapacityTextTests(SynchronousTestCase):
    def test_a_share_of_the_node_with_wakes_waiting_and_an_eviction(self):
        text = capacity_text({
            "limited": True, "max_awake": None, "memory": 2 * GiB, "memory_share": 0.5,
            "node_memory": 4 * GiB, "awake": 2, "memory_used": GiB + GiB // 2,
            "waiting": [{"agent": "alpha", "since": 0.0, "waiting_for": "evicting",
                         "waited": 12.0}],
            "max_queued": 100, "evicting": ["beta"], "time": 12.0})
        self.assertEqual(text.splitlines(), [
            "awake      2",
            "memory     1.5 GiB of 2.0 GiB (50% of the node's 4.0 GiB)",
            "waiting    1 of at most 100",
            "AGENT  WAITING  FOR",
            "alpha  12s      evicting",
            "evicting   beta",
        ])

    def test_a_share_of_a_node_not_read_yet(self):
        text = capacity_text({"limited": True, "memory": None, "memory_share": 0.8,
                              "node_memory": None, "awake": 0, "memory_used": 0,
                              "waiting": [], "max_queued": 10, "evicting": []})
        self.assertIn("memory     0 B (80% of the node's memory, not read yet)", text)
