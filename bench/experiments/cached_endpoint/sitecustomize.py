"""
Experiment, not a fix: keepalive_pool, plus one client endpoint per backend instead of
one per request (Agent builds a HostnameEndpoint, IDNA-encoding the host, for every
request) and one getsockname per client connection instead of one per request.

    PYTHONPATH=bench/experiments/cached_endpoint bench/run --only http,profile \
        --output /tmp/cached_endpoint.md
"""

from twisted.web import client, http

client.HTTPConnectionPool.maxPersistentPerHost = 64
client._HTTP11ClientFactory.noisy = False

_endpoint_for_uri = client.Agent._getEndpoint
_endpoints = {}


def _cached_endpoint(self, uri):
    key = (uri.scheme, uri.host, uri.port)
    endpoint = _endpoints.get(key)
    if endpoint is None:
        endpoint = _endpoints[key] = _endpoint_for_uri(self, uri)
    return endpoint


def _cached_host(self):
    host = self.__dict__.get("_experiment_host")
    if host is None:
        host = self._experiment_host = self.transport.getHost()
    return host


client.Agent._getEndpoint = _cached_endpoint
http.HTTPChannel.getHost = _cached_host
