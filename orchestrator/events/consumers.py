"""
Event consumers: where events go besides the twistd log.

Built in: the structured log (L{orchestrator.events.jsonlines.JsonLinesConsumer}, JSON lines to
C{events.log_file}), a generic webhook (L{WebhookConsumer}) and Slack
(L{SlackConsumer}). Each configured consumer gets only the event types its C{events}
patterns select (L{orchestrator.events.bus.FilteredConsumer}).
"""

from __future__ import annotations

from orchestrator.config.model import ConsumerConfig, ConsumerType
from orchestrator.events.jsonlines import JsonLinesConsumer
from orchestrator.events.slack import SlackConsumer, slack_message
from orchestrator.events.webhook import WebhookConsumer, event_json

__all__ = [
    "JsonLinesConsumer",
    "SlackConsumer",
    "WebhookConsumer",
    "event_json",
    "make_consumer",
    "slack_message",
]


def make_consumer(config: ConsumerConfig, *, reactor, http=None) -> WebhookConsumer:
    """
    The consumer C{config} describes (a service: it sends only while running).
    """
    settings = dict(clock=reactor, reactor=reactor, http=http, timeout=config.timeout,
                    retries=config.retries, backoff=config.backoff,
                    queue_size=config.queue_size)
    if config.type is ConsumerType.SLACK:
        return SlackConsumer(config.url, blocks=config.blocks, **settings)
    return WebhookConsumer(config.url, **settings)
