"""
Making a cold start painless: content negotiation for the waiting page, C{Prefer: wait=N},
the long-poll behind C{/api/health?wait=N}, and requests held while their agent wakes.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from importlib import resources
from string import Template

from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from orchestrator.states import AgentState

#: The built-in waiting page; an agent's C{cold_start.page} replaces it.
DEFAULT_PAGE = resources.files("orchestrator").joinpath("static/waiting.html").read_text("utf-8")
CLIENT_JS = resources.files("orchestrator").joinpath("static/client.js").read_bytes()


def media_quality(accept: bytes, media_type: bytes) -> float:
    """
    The quality C{accept} gives C{media_type} (RFC 9110 section 12.5.1): the most
    specific matching range wins (C{text/html} over C{text/*} over C{*/*}); 0 if none.
    """
    kind = media_type.split(b"/", 1)[0]
    best_specificity, quality = -1, 0.0
    for item in accept.split(b","):
        parts = [part.strip() for part in item.split(b";")]
        media_range = parts[0].lower()
        if media_range == media_type:
            specificity = 2
        elif media_range == kind + b"/*":
            specificity = 1
        elif media_range == b"*/*":
            specificity = 0
        else:
            continue
        q = 1.0
        for parameter in parts[1:]:
            name, _, value = parameter.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0 or math.isnan(q):
                    q = 0.0
        if specificity > best_specificity:
            best_specificity, quality = specificity, q
    return quality


def prefers_html(accept: bytes | None) -> bool:
    """
    Whether a client prefers an HTML page to JSON: browsers navigating do
    (C{text/html,...,*/*;q=0.8}); C{curl} (C{*/*}) and API clients do not.
    """
    if not accept:
        return False
    html_quality = media_quality(accept, b"text/html")
    return html_quality > 0 and html_quality > media_quality(accept, b"application/json")


def prefer_wait(values: list[bytes] | None) -> float | None:
    """
    The C{wait} preference of C{Prefer} headers (RFC 7240), in seconds, or C{None}.
    """
    for value in values or ():
        for preference in value.split(b","):
            token = preference.split(b";", 1)[0].strip()
            name, _, argument = token.partition(b"=")
            if name.strip().lower() == b"wait":
                try:
                    seconds = float(argument.strip().strip(b'"'))
                except ValueError:
                    return None
                return seconds if seconds > 0 and math.isfinite(seconds) else None
    return None


class WaitingPage:
    """
    The HTML answer to a browser navigating to an agent that is not ready.
    """

    def __init__(self, template_text: str = DEFAULT_PAGE) -> None:
        self._template = Template(template_text)

    def render(self, health: dict, retry_after: int) -> bytes:
        status = health["status"]
        estimate = health.get("estimated_wait")
        messages = {
            AgentState.STARTING.value: "The agent was asleep and is waking up.",
            AgentState.SLEEPING.value: "The agent is asleep.",
            AgentState.DEGRADED.value: "The agent could not start"
            + (f": {health['reason']}" if health.get("reason") else "."),
        }
        page = self._template.safe_substitute(
            agent=html.escape(health["agent"]),
            status=html.escape(status),
            message=html.escape(messages.get(status, status)),
            phase=html.escape(health.get("phase", "")),
            reason=html.escape(health.get("reason", "")),
            retry_after=retry_after,
            estimated_wait=json.dumps(estimate),
        )
        return page.encode("utf-8")


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


class Waiter:
    """
    A request parked until its agent is ready or degraded, or C{timeout} passes. Then
    C{decide()} returns the handler that answers it (an exchange with the backend, or a
    local answer), which takes over at once: a held upload must flow as soon as the agent
    is ready, not when twisted.web gets around to rendering. One timer per request, no
    thread; a client that goes away stops the wait.
    """

    def __init__(self, agent, request, timeout: float, clock, decide, body=None) -> None:
        """
        @param body: where the request body goes meanwhile (a paused L{StreamingBody}).
        """
        self.body = body
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
            request.handler = self._handler
            return self._handler.render(request)
        self._rendered = True
        return NOT_DONE_YET

    def _settle(self, result) -> None:
        if self._timer.active():
            self._timer.cancel()
        if isinstance(result, Failure):
            result.trap(Exception)  # the timeout or the client leaving: answer as things stand
        if self._gone:
            return
        handler = self._handler = self._request.handler = self._decide()
        if self._rendered:
            answer = handler.render(self._request)
            if answer is not NOT_DONE_YET:
                self._request.write(answer)
                self._request.finish()

    def _client_gone(self, failure: Failure) -> None:
        self._gone = True
        self._waiting.cancel()
