"""
Prometheus metrics: a collector that reads the state at scrape time
(L{orchestrator.metrics.collector}), counters fed by the event bus and the HTTP path's
meter (L{orchestrator.metrics.counting}), and the exposition
(L{orchestrator.metrics.exposition}); all in a C{CollectorRegistry} of their own, never
prometheus_client's global one.
"""
