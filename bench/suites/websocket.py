"""
WebSocket relay: the place for the WebSocket measurements, not written yet.

What belongs here (same three paths as L{bench.suites.http_requests}):

  - echo messages/s and round-trip time p50/p99, directly to an echo backend, through
    nginx (a C{location} with C{proxy_http_version 1.1}, C{Upgrade}/C{Connection}
    headers: add a template to C{bench/nginx/}), and through the orchestrator's relay;
  - memory per idle relayed socket: open N idle sockets through the orchestrator and
    divide the VmRSS growth by N.

The helpers are ready: C{bench.scope()} for processes that stop with the suite,
C{bench.nginx(name, template, cpu=..., **fields)}, C{bench.orchestrator(name,
backend_port=...)} (add agents with L{bench.harness.BenchAgent}), C{bench.spawn} for an echo
backend or a load generator pinned with C{cpu=LOAD_CPU}, C{bench.run} for a bounded
client run, and in L{bench.measure}: C{CpuMeter}, C{status_kib}, C{reset_peak_rss},
C{RssSampler}, C{percentile}. Return a L{Section}; the run puts it in docs/benchmarks.md
in the order of L{bench.suites.SUITES}. Keep loops bounded in count and time.
"""

from __future__ import annotations

from bench.harness import Bench
from bench.suites.base import Options, Section

PLANNED = """Not measured yet. This section will hold, for the three paths of the HTTP
suite (direct to an echo backend, through nginx, through the orchestrator's relay):

| Measurement | Direct | nginx | Orchestrator |
|---|---:|---:|---:|
| echo messages/s | - | - | - |
| round-trip p50 / p99 ms | - | - | - |
| memory per idle relayed socket | | - | - |

Write it in `bench/suites/websocket.py` (its docstring lists the helpers to use)."""


class WebSocketSuite:
    """
    Placeholder: renders the planned table until the measurements are written.
    """

    name = "websocket"
    title = "WebSocket relay"

    def run(self, bench: Bench, options: Options) -> Section:
        return Section(self.title, PLANNED, ("WebSocket: not measured yet.",))
