"""
When an on-demand agent has been idle long enough to sleep.
"""

from __future__ import annotations


def idle_deadline(*, last_activity: float, in_flight: int, timeout: float, now: float) -> float | None:
    """
    Return when to look again, or C{None} if the agent has been idle long enough to sleep.

    A request in flight is activity: an agent streaming a long answer stays awake.
    """
    if in_flight > 0:
        return now + timeout
    deadline = last_activity + timeout
    return None if now >= deadline else deadline
