"""
Event consumers: where events go besides the twistd log.

Built in: the structured log (L{orchestrator.events.JsonLinesConsumer}, JSON lines to
C{events.log_file}), a generic webhook (L{WebhookConsumer}) and Slack
(L{SlackConsumer}). Each configured consumer gets only the event types its C{events}
patterns select (L{orchestrator.events.FilteredConsumer}).
"""

from __future__ import annotations

from orchestrator.config import ConsumerConfig, ConsumerType
from orchestrator.consumers.slack import SlackConsumer, slack_message
from orchestrator.consumers.webhook import WebhookConsumer, event_json
from orchestrator.events import JsonLinesConsumer

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
