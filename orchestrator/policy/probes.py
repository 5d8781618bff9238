"""
When an awake agent's health probes fall: each agent on a phase of its own within the
interval, so a thousand agents woken (or found awake) together do not all probe on the
same tick.
"""

from __future__ import annotations

import zlib


def probe_phase(name: str, interval: float) -> float:
    """
    The agent's own offset within C{interval}, in [0, interval): the same for the same
    name (across restarts too), and spread evenly over many names.
    """
    return zlib.crc32(name.encode("utf-8")) / 2 ** 32 * interval


def next_probe(name: str, interval: float, now: float) -> float:
    """
    Seconds from C{now} to the agent's next probe on its phase: in (0, interval].
    """
    delay = (probe_phase(name, interval) - now) % interval
    return delay if delay > 0 else interval
