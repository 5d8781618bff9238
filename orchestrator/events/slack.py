"""
The Slack consumer: each event as a message to a Slack incoming webhook, one readable
line (C{{"text": ...}}), optionally with Block Kit blocks carrying the event's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from orchestrator.events.bus import Event
from orchestrator.events.webhook import WebhookConsumer

#: Event type -> (emoji, line template); the template takes the event's fields and
#: C{agent}. Unknown types fall back to the type and the fields.
_LINES: Mapping[str, tuple[str, str]] = {
    "agent.reconciled": (":mag:", "*{agent}* found {state} at start"),
    "agent.wake": (":hourglass_flowing_sand:", "*{agent}* is waking up ({reason})"),
    "agent.ready": (":white_check_mark:", "*{agent}* is ready"),
    "agent.sleep": (":zzz:", "*{agent}* went to sleep"),
    "agent.degraded": (":red_circle:", "*{agent}* is degraded: {reason}"),
    "agent.recovered": (":large_green_circle:", "*{agent}* recovered"),
    "agent.health_failed": (":warning:",
                            "*{agent}* failed a health probe ({consecutive} in a row): {detail}"),
    "agent.lease_acquired": (":lock:", "*{agent}* is kept awake until {expires_at}: {reason}"),
    "agent.lease_renewed": (":lock:", "*{agent}* renewed a lease, until {expires_at}: {reason}"),
    "agent.lease_released": (":unlock:", "*{agent}* let a lease go ({why}): {reason}"),
    "agent.lease_expired": (":unlock:", "*{agent}*'s lease ran out: {reason}"),
    "route.registered": (":link:", "*{agent}* now serves {host}"),
    "route.removed": (":broken_chain:", "*{agent}* no longer serves {host} ({reason})"),
    "route.refused": (":no_entry:", "*{agent}* was refused ({code}): {reason}"),
    "restart.exhausted": (":octagonal_sign:",
                          "Swarm gave up restarting *{agent}* after {attempts} failed "
                          "attempts (max_attempts {max_attempts}): {error}"),
    "swarm.disconnected": (":electric_plug:", "Lost the Docker engine's events: {reason}"),
    "swarm.reconnected": (":electric_plug:",
                          "Back on the Docker engine's events after {outage}s"),
    "config.reloaded": (":arrows_counterclockwise:",
                        "Configuration reloaded: added {added}, removed {removed}, "
                        "changed {changed}"),
    "config.reload_failed": (":x:", "Configuration reload refused: {problems}"),
}


def slack_line(event: Event) -> str:
    """
    One readable line for C{event}, in Slack's mrkdwn (C{&}, C{<}, C{>} escaped).
    """
    fields = {key: _escape(_words(value)) for key, value in event.fields.items()}
    fields["agent"] = _escape(event.agent or "orchestrator")
    if "expires" in event.fields:
        fields["expires_at"] = datetime.fromtimestamp(event.fields["expires"], UTC).strftime(
            "%H:%M:%S UTC")
    emoji, template = _LINES.get(event.type, ("", ""))
    try:
        text = template.format_map(fields) if template else ""
    except KeyError:
        text = ""
    if not text:
        details = " ".join(f"{key}={value}" for key, value in sorted(fields.items())
                           if key != "agent")
        text = f"*{fields['agent']}* {event.type} {details}".rstrip()
    if event.type == "agent.ready" and "wake_seconds" in event.fields:
        text += f" (woke in {event.fields['wake_seconds']}s)"
    if event.type == "agent.sleep" and "idle_seconds" in event.fields:
        text += f" after {event.fields['idle_seconds']:g}s idle"
    return f"{emoji} {text}".strip()


def slack_message(event: Event, blocks: bool = False) -> dict[str, Any]:
    """
    The incoming-webhook body for C{event}: C{text} always (Slack's notification and
    fallback), and with C{blocks} a section with the line and a context with the fields.
    """
    text = slack_line(event)
    message: dict[str, Any] = {"text": text}
    if blocks:
        when = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        details = [f"*{_escape(key)}:* {_escape(_short(value))}"
                   for key, value in sorted(event.fields.items())]
        message["blocks"] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": " · ".join([f"`{event.type}`", when, *details])},
            ]},
        ]
    return message


class SlackConsumer(WebhookConsumer):
    """
    A L{WebhookConsumer} whose body is a Slack message.
    """

    kind = "slack"

    def __init__(self, url: str, *, blocks: bool = False, **kwargs: Any) -> None:
        render: Callable[[Event], dict[str, Any]] = partial(slack_message, blocks=blocks)
        super().__init__(url, render=render, **kwargs)


def _words(value: object) -> str:
    """
    A field as words: lists joined with commas (C{none} if empty), the rest as is.
    """
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
