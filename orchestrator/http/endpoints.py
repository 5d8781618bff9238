"""
One way to reach a backend, for the HTTP client and the WebSocket relay alike: an
endpoint per backend address, made once, with one TLS setting for C{https}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.web.client import BrowserLikePolicyForHTTPS

from orchestrator.http.spread import AvoidingEndpoint, SpreadEndpoint


class BackendEndpoints:
    """
    One endpoint per backend address, made once. An IP literal connects directly (no
    lookup); a name (C{tasks.<service>}) is resolved at each new connection, as Swarm's
    DNS answers change with the tasks, and connections are spread over its addresses,
    avoiding one that failed (L{SpreadEndpoint}). C{https} backends get TLS from one policy
    (a browser's by default: the certificate must match the name).
    """

    def __init__(self, reactor, connect_timeout: float, tls_policy=None) -> None:
        """
        @param tls_policy: an L{IPolicyForHTTPS}; by default L{BrowserLikePolicyForHTTPS}.
        """
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._tls_policy = tls_policy or BrowserLikePolicyForHTTPS()
        self._endpoints: dict[tuple[bytes, bytes], object] = {}

    @property
    def connect_timeout(self) -> float:
        return self._connect_timeout

    def set_connect_timeout(self, seconds: float) -> None:
        """
        Take up a new connect timeout (a reload): endpoints are made anew, connections
        open or in progress keep theirs.
        """
        if seconds != self._connect_timeout:
            self._connect_timeout = seconds
            self._endpoints.clear()

    def get(self, scheme: bytes, authority: bytes,
            avoid: Callable[[], frozenset[str]] | None = None):
        """
        The endpoint for C{scheme://authority} (C{b"http"}, C{b"host:8080"}).

        @param avoid: for a name with several addresses (plain C{http}), the addresses
            to try last at each connection (L{AvoidingEndpoint}).
        """
        endpoint = self._endpoints.get((scheme, authority))
        if endpoint is None:
            endpoint = self._endpoints[scheme, authority] = self._make(scheme, authority)
        if avoid is not None and isinstance(endpoint, SpreadEndpoint):
            return AvoidingEndpoint(endpoint, avoid)
        return endpoint

    def for_backend(self, backend, avoid: Callable[[], frozenset[str]] | None = None):
        """
        The endpoint for an agent's L{orchestrator.config.model.Backend}: the same one
        the HTTP client uses for its URL.
        """
        scheme, _, authority = backend.url.partition("://")
        return self.get(scheme.encode("ascii"), authority.encode("ascii"), avoid)

    def _make(self, scheme: bytes, authority: bytes):
        host, port = _split_authority(authority, 443 if scheme == b"https" else 80)
        timeout = self._connect_timeout
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            endpoint = SpreadEndpoint(self._reactor, host, port, timeout)
        else:
            kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
            endpoint = kind(self._reactor, str(address), port, timeout=timeout)
        if scheme == b"https":
            creator = self._tls_policy.creatorForNetloc(host.encode("ascii"), port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


def _split_authority(authority: bytes, default_port: int) -> tuple[str, int]:
    text = authority.decode("ascii")
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = text.partition(":")
    return host, int(port) if port else default_port
