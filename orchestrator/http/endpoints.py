"""
One way to reach a backend: an endpoint per backend address, made once, with TLS for
C{https}.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.web.client import BrowserLikePolicyForHTTPS


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
        self._endpoints: dict[tuple[bytes, bytes], object] = {}

    def get(self, scheme: bytes, authority: bytes):
        endpoint = self._endpoints.get((scheme, authority))
        if endpoint is None:
            endpoint = self._endpoints[scheme, authority] = self._make(scheme, authority)
        return endpoint

    def _make(self, scheme: bytes, authority: bytes):
        host, port = _split_authority(authority, 443 if scheme == b"https" else 80)
        timeout = self._connect_timeout
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            endpoint = HostnameEndpoint(self._reactor, host.encode("ascii"), port, timeout=timeout)
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
