"""
What the proxy and the relay report as it happens, for metrics: the one protocol
between the HTTP path and L{orchestrator.metrics}, which sits above it. The HTTP path
calls an L{ITrafficMeter}; a service without metrics passes L{NO_METER}.
"""

from __future__ import annotations

from zope.interface import Interface, implementer

#: The directions of a relayed WebSocket frame.
TO_AGENT = "to_agent"
TO_CLIENT = "to_client"


class ITrafficMeter(Interface):
    """
    Told of each finished request and each relayed frame. Must not block or raise.
    """

    def request_finished(agent: str | None, method: bytes, code: int,  # type: ignore[misc]
                         seconds: float) -> None:
        """
        The proxy answered a request (C{agent} is C{None} when no agent serves its host),
        C{seconds} after its headers were in.
        """

    def frame_relayed(agent: str, direction: str) -> None:  # type: ignore[misc]
        """
        One WebSocket data frame went C{TO_AGENT} or C{TO_CLIENT}.
        """


@implementer(ITrafficMeter)
class _NoMeter:
    def request_finished(self, agent, method, code, seconds) -> None:
        pass

    def frame_relayed(self, agent, direction) -> None:
        pass


#: The meter of a service without metrics (and of the HTTP path's unit tests).
NO_METER: ITrafficMeter = _NoMeter()
