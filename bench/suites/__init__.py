"""
The suites a run measures, in report order. Add one by writing a class with C{name},
C{title} and C{run(bench, options) -> Section} (see L{bench.suites.base.Suite}) and
listing it here.
"""

from __future__ import annotations

from bench.suites.base import Options, Section, Suite
from bench.suites.coldstart import ColdStartSuite
from bench.suites.eviction import EvictionSuite
from bench.suites.http_requests import HttpSuite
from bench.suites.multinode import MultiNodeSuite
from bench.suites.profile import ProfileSuite
from bench.suites.scale import ScaleSuite
from bench.suites.streaming import StreamingSuite
from bench.suites.websocket import WebSocketSuite

SUITES: list[Suite] = [HttpSuite(), StreamingSuite(), WebSocketSuite(), ColdStartSuite(),
                       EvictionSuite(), ScaleSuite(), MultiNodeSuite(), ProfileSuite()]

__all__ = ["SUITES", "Options", "Section", "Suite"]
