"""
Connections to backends: a keep-alive pool per agent and an HTTP client that reuses its
endpoints, so a request costs neither a new connection nor a name lookup.

Measured on the request path (docs/benchmarks.md): with Twisted's default of two idle
connections per host, 426 of every 1,000 requests under 50 concurrent clients opened a
new backend connection, each logging two lines and resolving the backend's address in
a thread; a new client and endpoint were built for every request.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

#: Idle keep-alive connections kept per backend: enough for the concurrency of a busy
#: agent, so steady traffic reuses connections instead of opening them.
KEEPALIVE_PER_BACKEND = 64


class _QuietClientFactory(_HTTP11ClientFactory):
    # One "Starting factory"/"Stopping factory" log pair per backend connection is noise.
    noisy = False


def backend_pool(reactor) -> HTTPConnectionPool:
    """
    A keep-alive pool for one agent's backend connections.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = KEEPALIVE_PER_BACKEND
    pool._factory = _QuietClientFactory
    return pool


@implementer(IAgentEndpointFactory)
class BackendEndpoints:
    """
    One endpoint per backend address, made once. An IP literal connects directly (no
    lookup); a name (C{tasks.<service>}) is resolved at each new connection, as Swarm's
    DNS answers change with the tasks.
    """

    def __init__(self, reactor, connect_timeout: float) -> None:
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._tls_policy = BrowserLikePolicyForHTTPS()
        self._endpoints: dict[tuple[bytes, bytes, int], object] = {}

    def endpointForURI(self, uri):
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._make(uri)
        return endpoint

    def _make(self, uri):
        host = uri.host.decode("ascii")
        timeout = self._connect_timeout
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=timeout)
        else:
            kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
            endpoint = kind(self._reactor, str(address), uri.port, timeout=timeout)
        if uri.scheme == b"https":
            creator = self._tls_policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


def backend_client(reactor, pool: HTTPConnectionPool, connect_timeout: float) -> Agent:
    """
    The HTTP client for one agent's backend, on its pool.
    """
    return Agent.usingEndpointFactory(reactor, BackendEndpoints(reactor, connect_timeout),
                                      pool=pool)
