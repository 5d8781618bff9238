"""
Event consumers: the bus's promise that a consumer never affects the publisher, the
event patterns, the webhook consumer (queue, drops, retries with backoff, timeouts; in
memory on a Clock, then against a real HTTP receiver on loopback: up, down, hanging),
and the Slack message format.
"""

from __future__ import annotations

import json
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from orchestrator.config.model import (
    Config,
    ConsumerConfig,
    ConsumerType,
    EventsConfig,
    ListenConfig,
    Policy,
)
from orchestrator.event_types import EVENT_TYPES
from orchestrator.events.bus import (
    Event,
    EventBus,
    FilteredConsumer,
    IEventConsumer,
    event_matches,
)
from orchestrator.events.consumers import SlackConsumer, WebhookConsumer, make_consumer
from orchestrator.events.slack import slack_line, slack_message
from orchestrator.events.webhook import retry_delay
from orchestrator.service import OrchestratorService
from orchestrator.states import TRANSITIONS
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import ScriptedProber, agent_config

URL = "https://hooks.example.com/T000/B000/secret-token"
DOCS = Path(__file__).parents[2] / "docs"


def event(type: str = "agent.degraded", agent: str | None = "alpha", **fields) -> Event:
    fields = fields or {"previous": "ready", "state": "degraded", "reason": "probe failed"}
    return Event(type, agent, 1_700_000_000.0, fields)


@implementer(IEventConsumer)
class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def consume(self, event: Event) -> None:
        self.events.append(event)


@implementer(IEventConsumer)
class Broken:
    def consume(self, event: Event) -> None:
        raise RuntimeError("consumer bug")


class Receiver(Resource):
    """
    A webhook receiver: answers each POST with the next scripted status (the last one
    repeats); C{None} never answers. Remembers every request.
    """

    isLeaf = True

    def __init__(self, *codes: int | None) -> None:
        super().__init__()
        self.codes = list(codes) or [200]
        self.requests: list[tuple[dict, bytes]] = []
        #: For each request left unanswered: fires when its connection is gone.
        self.hanging: list[Deferred] = []
        self.arrived: list[Deferred] = []

    def render_POST(self, request):
        headers = {key.decode(): [v.decode() for v in values]
                   for key, values in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((headers, request.content.read()))
        code = self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]
        waiters, self.arrived = self.arrived, []
        for waiter in waiters:
            waiter.callback(None)
        if code is None:
            # It ends when the client gives up (the connection is lost): expected.
            self.hanging.append(request.notifyFinish().addErrback(lambda failure: None))
            return NOT_DONE_YET
        request.setResponseCode(code)
        return b"ok"

    def next_request(self) -> Deferred:
        arrived: Deferred = Deferred()
        self.arrived.append(arrived)
        return arrived

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]


# The bus and the patterns ----------------------------------------------------------------


class EventBusConsumerTests(SynchronousTestCase):
    def test_a_failing_consumer_never_affects_the_publisher_or_the_others(self):
        bus = EventBus(Clock())
        collector = Collector()
        bus.subscribe(Broken())
        bus.subscribe(collector)
        published = bus.emit("agent.wake", "alpha", reason="request")
        self.assertEqual(collector.events, [published])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_every_transition_event_is_a_known_event_type(self):
        self.assertLessEqual(set(TRANSITIONS.values()), set(EVENT_TYPES))

    def test_every_event_type_is_documented_with_its_fields(self):
        with open(DOCS / "events.md", encoding="utf-8") as docs:
            rows = [line for line in docs if line.startswith("| `")]
        for type in EVENT_TYPES:
            self.assertTrue([row for row in rows if row.startswith(f"| `{type}` |")], type)


class EventPatternTests(SynchronousTestCase):
    def test_exact_names_and_wildcards(self):
        self.assertTrue(event_matches(["agent.degraded"], "agent.degraded"))
        self.assertTrue(event_matches(["agent.*"], "agent.health_failed"))
        self.assertTrue(event_matches(["*"], "restart.exhausted"))
        self.assertFalse(event_matches(["agent.*"], "restart.exhausted"))
        self.assertFalse(event_matches([], "agent.wake"))

    def test_filtered_consumer_passes_only_matching_events(self):
        collector = Collector()
        filtered = FilteredConsumer(collector, ["restart.exhausted", "agent.degraded"])
        self.assertTrue(verifyObject(IEventConsumer, filtered))
        for type in ["agent.wake", "agent.degraded", "restart.exhausted", "agent.ready"]:
            filtered.consume(event(type))
        self.assertEqual([e.type for e in collector.events],
                         ["agent.degraded", "restart.exhausted"])


# The webhook consumer, in memory ----------------------------------------------------------


class WebhookConsumerTests(SynchronousTestCase):
    def make(self, *codes, start=True, **settings) -> tuple[WebhookConsumer, Receiver]:
        receiver = Receiver(*codes)
        self.http = StubTreq(receiver)
        self.clock = Clock()
        consumer = WebhookConsumer(URL, clock=self.clock, http=self.http, **settings)
        if start:
            consumer.startService()
            self.addCleanup(consumer.stopService)
        return consumer, receiver

    def test_provides_the_consumer_interface(self):
        consumer, _ = self.make()
        self.assertTrue(verifyObject(IEventConsumer, consumer))

    def test_each_event_is_posted_as_its_json_form(self):
        consumer, receiver = self.make()
        consumer.consume(event())
        self.http.flush()
        [(headers, body)] = receiver.requests
        self.assertEqual(json.loads(body), event().as_dict())
        self.assertEqual(headers["Content-Type"], ["application/json"])
        self.assertEqual(consumer.delivered, 1)

    def test_events_consumed_before_start_wait_for_it(self):
        consumer, receiver = self.make(start=False)
        consumer.consume(event())
        self.http.flush()
        self.assertEqual(receiver.requests, [])
        consumer.startService()
        self.http.flush()
        self.assertEqual(len(receiver.requests), 1)
        consumer.stopService()

    def test_events_are_sent_in_order(self):
        consumer, receiver = self.make()
        for type in ["agent.wake", "agent.ready", "agent.sleep"]:
            consumer.consume(event(type))
        self.http.flush()
        self.assertEqual([body["event"] for body in receiver.bodies()],
                         ["agent.wake", "agent.ready", "agent.sleep"])

    def test_consume_returns_at_once_while_the_receiver_hangs(self):
        consumer, receiver = self.make(None)
        for _ in range(3):
            consumer.consume(event())
        self.http.flush()
        self.assertEqual(len(receiver.requests), 1)
        self.assertEqual(consumer.queued, 2)

    def test_full_queue_drops_the_oldest_and_counts(self):
        consumer, receiver = self.make(None, queue_size=2)
        consumer.consume(event("agent.wake"))  # in flight, not queued
        for type in ["agent.ready", "agent.sleep", "agent.degraded", "agent.recovered"]:
            consumer.consume(event(type))
        self.assertEqual(consumer.dropped, 2)
        self.assertEqual([e.type for e in consumer._queue],
                         ["agent.degraded", "agent.recovered"])

    def test_failed_post_is_retried_after_doubling_delays(self):
        consumer, receiver = self.make(500, 503, 200, backoff=1.0)
        consumer.consume(event())
        self.http.flush()
        self.assertEqual(len(receiver.requests), 1)
        self.clock.advance(0.99)
        self.http.flush()
        self.assertEqual(len(receiver.requests), 1)
        self.clock.advance(0.01)
        self.http.flush()
        self.assertEqual(len(receiver.requests), 2)
        self.clock.advance(2)
        self.http.flush()
        self.assertEqual(len(receiver.requests), 3)
        self.assertEqual((consumer.delivered, consumer.failed), (1, 0))

    def test_gives_up_after_the_retries_and_goes_on_with_the_next(self):
        consumer, receiver = self.make(500, 500, 500, 200, retries=2, backoff=1.0)
        consumer.consume(event("agent.degraded"))
        consumer.consume(event("agent.recovered"))
        for _ in range(3):
            self.http.flush()
            self.clock.advance(10)
        self.http.flush()
        self.assertEqual([body["event"] for body in receiver.bodies()],
                         ["agent.degraded"] * 3 + ["agent.recovered"])
        self.assertEqual((consumer.delivered, consumer.failed), (1, 1))

    def test_refused_event_is_not_retried(self):
        consumer, receiver = self.make(400)
        consumer.consume(event())
        self.http.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(consumer.failed, 1)

    def test_too_many_requests_is_retried(self):
        consumer, receiver = self.make(429, 200)
        consumer.consume(event())
        self.http.flush()
        self.clock.advance(1)
        self.http.flush()
        self.assertEqual(consumer.delivered, 1)

    def test_no_answer_within_the_timeout_is_a_failed_attempt(self):
        consumer, receiver = self.make(None, timeout=5.0, retries=1, backoff=1.0)
        consumer.consume(event())
        self.http.flush()
        self.clock.advance(5)  # the first attempt times out
        self.clock.advance(1)  # the retry
        self.http.flush()
        self.assertEqual(len(receiver.requests), 2)
        self.clock.advance(5)
        self.assertEqual(consumer.failed, 1)

    def test_stop_cancels_the_post_in_flight_and_leaves_no_timer(self):
        consumer, receiver = self.make(None)
        consumer.consume(event())
        consumer.consume(event())
        self.http.flush()
        self.successResultOf(consumer.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        consumer.consume(event())
        self.http.flush()
        self.assertEqual(len(receiver.requests), 1)

    def test_the_url_is_never_in_its_name(self):
        consumer, _ = self.make()
        self.assertEqual(consumer.name, "webhook hooks.example.com")
        self.assertNotIn("secret", repr(consumer))

    def test_retry_delays_double_up_to_a_minute(self):
        self.assertEqual([retry_delay(n, 1.0) for n in range(1, 9)],
                         [1, 2, 4, 8, 16, 32, 60, 60])


class MakeConsumerTests(SynchronousTestCase):
    def test_webhook_and_slack_from_their_config(self):
        clock = Clock()
        webhook = make_consumer(ConsumerConfig(ConsumerType.WEBHOOK, URL, retries=2,
                                               timeout=3.0, queue_size=7),
                                reactor=clock, http=StubTreq(Receiver()))
        self.assertIs(type(webhook), WebhookConsumer)
        self.assertEqual((webhook.retries, webhook.timeout, webhook.queue_size), (2, 3.0, 7))
        slack = make_consumer(ConsumerConfig(ConsumerType.SLACK, URL, blocks=True),
                              reactor=clock, http=StubTreq(Receiver()))
        self.assertIs(type(slack), SlackConsumer)

    def test_slack_consumer_posts_slack_messages(self):
        receiver = Receiver()
        http = StubTreq(receiver)
        consumer = SlackConsumer(URL, clock=Clock(), http=http)
        consumer.startService()
        consumer.consume(event())
        http.flush()
        self.assertEqual(receiver.bodies(), [slack_message(event())])


# Slack's message format ------------------------------------------------------------------


class SlackMessageTests(SynchronousTestCase):
    def test_degraded_says_why(self):
        self.assertEqual(slack_message(event()),
                         {"text": ":red_circle: *alpha* is degraded: probe failed"})

    def test_each_known_event_has_a_readable_line(self):
        samples = {
            "agent.reconciled": {"state": "sleeping"},
            "agent.wake": {"previous": "sleeping", "state": "starting", "reason": "request"},
            "agent.ready": {"previous": "starting", "state": "ready", "wake_seconds": 1.3},
            "agent.sleep": {"previous": "ready", "state": "sleeping", "idle_seconds": 900.0},
            "agent.degraded": {"previous": "ready", "state": "degraded", "reason": "x"},
            "agent.recovered": {"previous": "degraded", "state": "ready"},
            "agent.health_failed": {"detail": "connection refused", "consecutive": 2},
            "restart.exhausted": {"service": "alpha", "attempts": 3, "max_attempts": 2,
                                  "error": "task: non-zero exit (1)"},
            "swarm.disconnected": {"reason": "the engine closed it"},
            "swarm.reconnected": {"outage": 2.5, "attempts": 2},
            "config.reloaded": {"added": ["b"], "removed": [], "changed": ["a"],
                                "restart_needed": []},
            "config.reload_failed": {"problems": ["o.yaml: agents: required"]},
            "agent.lease_acquired": {"lease": "x", "reason": "tool call", "seconds": 60,
                                     "expires": 1795503788.0},
            "agent.lease_renewed": {"lease": "x", "reason": "tool call", "expires": 1.0},
            "agent.lease_released": {"lease": "x", "reason": "tool call", "why": "released"},
            "agent.lease_expired": {"lease": "x", "reason": "tool call"},
            "route.registered": {"host": "p.alpha.example.com", "backend": "http://a:1",
                                 "replaced": False},
            "route.removed": {"host": "p.alpha.example.com", "reason": "the agent slept"},
            "route.refused": {"code": 403, "reason": "not yours", "field": "host",
                              "suppressed": 0},
        }
        self.assertEqual(set(samples), set(EVENT_TYPES))
        lines = {type: slack_line(event(type, **fields)) for type, fields in samples.items()}
        self.assertEqual(lines["agent.ready"],
                         ":white_check_mark: *alpha* is ready (woke in 1.3s)")
        self.assertEqual(lines["agent.sleep"], ":zzz: *alpha* went to sleep after 900s idle")
        self.assertEqual(lines["restart.exhausted"],
                         ":octagonal_sign: Swarm gave up restarting *alpha* after 3 failed "
                         "attempts (max_attempts 2): task: non-zero exit (1)")
        for type, line in lines.items():
            self.assertNotIn("{", line, type)
            self.assertNotIn(type, line)  # a sentence, not a dump

    def test_unknown_events_and_missing_fields_still_make_a_line(self):
        self.assertEqual(slack_line(event("agent.custom", colour="blue")),
                         "*alpha* agent.custom colour=blue")
        self.assertEqual(slack_line(event("agent.degraded", previous="ready")),
                         ":red_circle: *alpha* agent.degraded previous=ready")

    def test_mrkdwn_control_characters_are_escaped(self):
        line = slack_line(event(reason="<!channel> & <http://evil|click>"))
        self.assertIn("&lt;!channel&gt; &amp; &lt;http://evil|click&gt;", line)

    def test_blocks_carry_the_line_and_the_fields(self):
        message = slack_message(event(), blocks=True)
        section, context = message["blocks"]
        self.assertEqual(section["text"]["text"], message["text"])
        details = context["elements"][0]["text"]
        self.assertIn("`agent.degraded`", details)
        self.assertIn("2023-11-14 22:13:20 UTC", details)
        self.assertIn("*reason:* probe failed", details)


# The webhook consumer against a real receiver on loopback ---------------------------------


class WebhookReceiverTests(TestCase):
    """
    The real treq client, the real reactor, a twisted.web receiver on 127.0.0.1.
    """

    timeout = 20

    def listen(self, receiver: Resource, port: int = 0):
        site = Site(receiver)
        listening = reactor.listenTCP(port, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return listening

    def consumer(self, port: int, **settings) -> WebhookConsumer:
        settings = {"timeout": 0.5, "retries": 2, "backoff": 0.05, **settings}
        consumer = WebhookConsumer(f"http://127.0.0.1:{port}/hook", clock=reactor,
                                   reactor=reactor, **settings)
        consumer.startService()
        self.addCleanup(consumer.stopService)
        return consumer

    async def until(self, condition, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if condition():
                return
            await deferLater(reactor, 0.01)
        self.fail("condition not met in time")

    async def test_posts_to_a_receiver(self):
        receiver = Receiver(204)
        port = self.listen(receiver).getHost().port
        consumer = self.consumer(port)
        consumer.consume(event())
        await self.until(lambda: consumer.delivered == 1)
        self.assertEqual(receiver.bodies(), [event().as_dict()])

    async def test_receiver_down_then_up_gets_the_event_on_a_retry(self):
        probe = self.listen(Receiver())
        port = probe.getHost().port
        await probe.stopListening()  # nothing listens there now
        consumer = self.consumer(port, retries=5, backoff=0.2)
        consumer.consume(event())
        receiver = Receiver()
        arrived = receiver.next_request()
        await deferLater(reactor, 0.05)  # the first attempt is refused
        self.assertEqual(consumer.delivered, 0)
        self.listen(receiver, port)
        await arrived
        await self.until(lambda: consumer.delivered == 1)
        self.assertEqual(consumer.failed, 0)

    async def test_receiver_down_for_good_is_given_up_and_counted(self):
        probe = self.listen(Receiver())
        port = probe.getHost().port
        await probe.stopListening()
        consumer = self.consumer(port, retries=2, backoff=0.01)
        consumer.consume(event())
        await self.until(lambda: consumer.failed == 1)
        self.assertEqual(consumer.delivered, 0)

    async def test_hanging_receiver_times_out_and_the_next_event_goes_through(self):
        receiver = Receiver(None, None, 200)
        port = self.listen(receiver).getHost().port
        consumer = self.consumer(port, timeout=0.2, retries=1, backoff=0.01)
        consumer.consume(event("agent.degraded"))
        consumer.consume(event("agent.recovered"))
        await self.until(lambda: consumer.delivered == 1)
        self.assertEqual(consumer.failed, 1)
        self.assertEqual([body["event"] for body in receiver.bodies()],
                         ["agent.degraded", "agent.degraded", "agent.recovered"])
        # The receiver sees the abandoned requests' connections closed.
        await DeferredList(receiver.hanging)


# Wired into the service tree -------------------------------------------------------------


class ServiceWiringTests(SynchronousTestCase):
    """
    The service sends the configured events to each consumer, and Swarm's events reach
    the agents, from start to stop.
    """

    def test_swarm_events_reach_the_consumer_that_selected_them(self):
        clock = MemoryReactorClock()
        swarm = FakeSwarm(auto_run=False)
        swarm.add_service("alpha", replicas=1)
        receiver = Receiver()
        http = StubTreq(receiver)
        config = Config(
            source="test.yaml",
            agents=(agent_config(policy=Policy.ALWAYS_ON),),
            listen=ListenConfig(proxy="tcp:8080", admin="tcp:9090"),
            events=EventsConfig(consumers=(
                ConsumerConfig(ConsumerType.WEBHOOK, URL,
                               events=("agent.degraded", "restart.*")),
            )),
        )
        service = OrchestratorService(config, swarm=swarm, reactor=clock,
                                      prober=ScriptedProber(healthy=False), http=http)
        service.startService()
        swarm.kill_tasks("alpha")
        clock.advance(0)
        http.flush()
        self.assertEqual([body["event"] for body in receiver.bodies()], ["agent.degraded"])
        self.assertIn("non-zero exit (137)", receiver.bodies()[0]["reason"])
        self.successResultOf(service.stopService())
        self.assertEqual(swarm._subscriptions, [])
        self.assertFalse(service.consumers[0].running)
