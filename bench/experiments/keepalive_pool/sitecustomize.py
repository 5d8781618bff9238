"""
Experiment, not a fix: measure the orchestrator with a bigger keep-alive pool and without
the per-connection "Starting/Stopping factory" log lines, without editing orchestrator/.

    PYTHONPATH=bench/experiments/keepalive_pool bench/run --only http,profile \
        --output /tmp/keepalive_pool.md

Python imports sitecustomize at start-up; the bench puts this directory on the
orchestrator's path after the repository.
"""

from twisted.web import client

# Twisted keeps at most 2 idle connections per backend by default: with more concurrent
# requests, most responses close their connection and the next request opens a new one.
client.HTTPConnectionPool.maxPersistentPerHost = 64
# Factory.noisy logs two lines per backend connection.
client._HTTP11ClientFactory.noisy = False
