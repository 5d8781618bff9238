"""
Requests parked while their agent wakes: the long-poll behind C{/api/health?wait=N} and
hold mode, with their caps.
"""

from __future__ import annotations

from collections import Counter

from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from orchestrator.flows import cancel_call
from orchestrator.http.bodies import DiscardedBody
from orchestrator.interfaces import IRequestHandler


class HoldCounter:
    """
    How many requests are held, per agent and in all, against the configured caps.
    C{overflow} counts the requests that found no room and got the usual 503.
    """

    def __init__(self, max_total: int) -> None:
        self.max_total = max_total
        self.total = 0
        self.per_agent: Counter[str] = Counter()
        self.overflow = 0

    def try_hold(self, agent: str, max_for_agent: int) -> bool:
        if self.total >= self.max_total or self.per_agent[agent] >= max_for_agent:
            self.overflow += 1
            return False
        self.total += 1
        self.per_agent[agent] += 1
        return True

    def release(self, agent: str) -> None:
        self.total -= 1
        self.per_agent[agent] -= 1


@implementer(IRequestHandler)
class Waiter:
    """
    A request parked until its agent is ready or degraded, or C{timeout} passes. Then
    C{decide()} returns the handler that answers it (an exchange with the backend, or a
    local answer), which takes over at once: a held upload must flow as soon as the agent
    is ready, not when twisted.web gets around to rendering. The waiter stays the
    request's handler and passes C{render} on. One timer per request, no thread; a
    client that goes away stops the wait.
    """

    def __init__(self, agent, request, timeout: float, clock, decide,
                 request_body=None, on_end=None) -> None:
        """
        @param request_body: where the request body goes meanwhile (a L{StreamingBody}
            the decided exchange goes on with); by default it is dropped.
        @param on_end: called once when the wait ends, however it ends (settled, timed
            out, or the client gone): where a held request gives its slot back.
        """
        self.request_body = request_body if request_body is not None else DiscardedBody()
        self._on_end = on_end
        self._request = request
        self._decide = decide
        self._handler = None
        self._rendered = False
        self._gone = False
        self._waiting = agent.when_settled()
        self._timer = clock.callLater(timeout, self._waiting.cancel)
        self._waiting.addBoth(self._settle)
        request.notifyFinish().addErrback(self._client_gone)

    def render(self, request):
        if self._handler is not None:  # settled before twisted.web asked for an answer
            return self._handler.render(request)
        self._rendered = True
        return NOT_DONE_YET

    def _settle(self, result) -> None:
        cancel_call(self._timer)
        if isinstance(result, Failure):
            result.trap(Exception)  # the timeout or the client leaving: answer as things stand
        if self._on_end is not None:
            self._on_end()
        if self._gone:
            return
        handler = self._handler = self._decide()
        if self._rendered:
            answer = handler.render(self._request)
            if answer is not NOT_DONE_YET:
                self._request.write(answer)
                self._request.finish()

    def _client_gone(self, failure: Failure) -> None:
        self._gone = True
        self._waiting.cancel()
