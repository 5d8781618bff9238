"""
The protocols the layers share, named: what the proxy's resource hands each request to.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IRequestHandler(Interface):
    """
    What the proxy does with one request, decided once its headers are in: where its body
    goes while it arrives, and its answer once it is complete.

    L{orchestrator.proxy.root.ProxyResource} picks one handler per request (a local
    answer, an exchange with the backend, a request held while its agent wakes, a
    WebSocket upgrade) and is the only one that stores it on the request.
    """

    request_body = Attribute(
        "Where the request body goes as it arrives: the file-like object twisted.web "
        "writes it into (it stands in for request.content). Never None: a handler that "
        "has no use for the body counts and drops it.")

    def render(request):  # type: ignore[misc]
        """
        The request is complete, body included: answer it as C{IResource.render} does,
        with the body bytes, or C{NOT_DONE_YET} when the answer is written later.
        """
