"""
The waiting page a browser gets for an agent that is not ready, and the JavaScript
helper C{/api/client.js}.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from string import Template

from orchestrator.states import AgentState

#: The built-in waiting page; an agent's C{cold_start.page} replaces it.
DEFAULT_PAGE = resources.files("orchestrator").joinpath("static/waiting.html").read_text("utf-8")


CLIENT_JS = resources.files("orchestrator").joinpath("static/client.js").read_bytes()


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
