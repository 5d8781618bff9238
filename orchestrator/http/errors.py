"""
Short human reasons for failed connections and requests.
"""

from __future__ import annotations

from twisted.internet import error as net
from twisted.web.client import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived


def describe_connection_error(error: BaseException) -> str:
    """
    A short human reason for a failed connection or request ("connection refused").
    """
    if isinstance(error, (ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed)):
        reasons = getattr(error, "reasons", None) or []
        if reasons:
            return describe_connection_error(reasons[0].value)
        return "the connection closed before a response"
    if isinstance(error, net.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, net.DNSLookupError):
        return "host name does not resolve"
    if isinstance(error, (net.TimeoutError, net.TCPTimedOutError)):
        return "connection timed out"
    if isinstance(error, net.ConnectionLost | net.ConnectionDone):
        return "the connection closed before a response"
    return str(error) or type(error).__name__
