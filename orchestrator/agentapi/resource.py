"""
The agents' API on its listener: the twisted.web resource behind a hardened Site (the
proxy's front door, with its header deadline and size limits), which keeps a request's
small body, asks L{orchestrator.agentapi.api.AgentApi} for the answer, and writes it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orchestrator.agentapi.api import AgentApi, Reply
from orchestrator.flows import log_unless_cancelled
from orchestrator.http.answers import json_answer
from orchestrator.http.bodies import KeptBody

log = Logger()


class AgentApiResource(Resource):
    """
    The root (and only) resource of the agents' listener.
    """

    isLeaf = True

    def __init__(self, api: AgentApi, clock) -> None:
        super().__init__()
        self._api = api
        self._clock = clock

    def prepare(self, request, length=0) -> KeptBody:
        """
        Where a request's body goes as it arrives: kept, up to the API's limit.
        """
        return KeptBody(self._api.max_body)

    def render(self, request):
        gone: list = []
        request.notifyFinish().addErrback(gone.append)
        body = request.content if isinstance(request.content, KeptBody) else None
        answering = Deferred.fromCoroutine(self._api.handle(
            request.method, request.path,
            authorization=request.requestHeaders.getRawHeaders(b"authorization"),
            body=body.value() if body is not None else b"",
            peer=getattr(request.getClientAddress(), "host", ""),
            local=getattr(request.getHost(), "host", ""),
        ))
        answering.addErrback(self._failed)
        answering.addCallback(self._write, request, gone)
        answering.addErrback(log_unless_cancelled, log, "the agents' API failed")
        return NOT_DONE_YET

    def _failed(self, failure) -> Reply:
        log.failure("the agents' API could not answer", failure)
        return Reply(500, {"error": "the orchestrator could not answer this request"})

    def _write(self, reply: Reply, request, gone: list) -> None:
        if gone:
            return  # the caller left before its answer was ready
        answer = json_answer(reply.code, reply.body, reply.headers)
        request.write(answer.apply(request, self._clock.seconds()))
        request.finish()
