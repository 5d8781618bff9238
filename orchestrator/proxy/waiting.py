"""
The waiting page a browser gets for an agent that is not ready, and the JavaScript
helper C{/api/client.js}.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from string import Template

from twisted.logger import Logger

from orchestrator.states import AgentState

log = Logger()

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


class WaitingPages:
    """
    Each agent's waiting page: its C{cold_start.page} template or the built-in page.
    A template is read the first time it is needed, and again after a reload
    (L{forget}), so an edited template shows without a restart.
    """

    def __init__(self) -> None:
        self._pages: dict[str | None, WaitingPage] = {None: WaitingPage()}

    def page(self, template_path: str | None) -> WaitingPage:
        """
        The page made from the template at C{template_path} (C{None}: the built-in one).
        """
        page = self._pages.get(template_path)
        if page is None:
            page = self._pages[template_path] = self._read(template_path)
        return page

    def forget(self) -> None:
        """
        Read templates again when next needed.
        """
        self._pages = {None: self._pages[None]}

    @staticmethod
    def _read(path: str) -> WaitingPage:
        try:
            with open(path, encoding="utf-8") as template:
                return WaitingPage(template.read())
        except (OSError, UnicodeDecodeError) as error:
            # Checked when the configuration was read; gone or broken since. Logged once
            # per reload: the built-in page is kept for it until then.
            log.warn("waiting page template {path} is unreadable ({error}); using the "
                     "built-in page", path=path, error=error, event="proxy.page_unreadable")
            return WaitingPage()
