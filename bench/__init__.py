"""
The benchmark harness: C{bench/run} measures the orchestrator against nginx on loopback
and writes docs/benchmarks.md. See L{bench.run}.
"""
