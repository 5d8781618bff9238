"""
The metrics: state read at scrape time from the registry, events counted as they
happen, labels bounded by the configured agents, and the exposition.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from orchestrator.config.diff import ConfigDiff
from orchestrator.meters import TO_AGENT, TO_CLIENT
from orchestrator.metrics.counting import method_class, status_class
from orchestrator.metrics.exposition import MetricsResource, exposition
from orchestrator.metrics.hub import Metrics
from orchestrator.proxy.holding import HoldCounter
from tests.agents.world import ALWAYS_ON, make_world


class FakeConsumer:
    kind = "webhook"
    delivered, failed, dropped, queued = 7, 2, 1, 3


class FakeStream:
    subscriber_count = 2
    dropped = 1


def make_metrics(*agents, **parts):
    world = make_world(*agents)
    metrics = Metrics(world.agents, world.bus, swarm=world.swarm, **parts)
    return world, metrics


def sample(metrics: Metrics, name: str, **labels) -> float | None:
    """
    The value of one sample in a scrape (C{None} if it is absent).
    """
    text = exposition(metrics.registry, None)[0].decode()
    for family in text_string_to_metric_families(text):
        for each in family.samples:
            if each.name == name and all(each.labels.get(k) == v for k, v in labels.items()):
                return each.value
    return None


def label_values(metrics: Metrics, name: str, label: str) -> set[str]:
    text = exposition(metrics.registry, None)[0].decode()
    return {each.labels[label] for family in text_string_to_metric_families(text)
            for each in family.samples if each.name == name and label in each.labels}


class StateTests(SynchronousTestCase):
    def test_agent_state_is_one_for_the_current_state_and_zero_for_the_others(self):
        world, metrics = make_metrics(("alpha", {}), ("steady", ALWAYS_ON))
        self.assertEqual(sample(metrics, "orchestrator_agent_state", agent="alpha",
                                state="sleeping"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_agent_state", agent="alpha",
                                state="ready"), 0.0)
        self.assertEqual(sample(metrics, "orchestrator_agent_state", agent="steady",
                                state="ready"), 1.0)

    def test_state_is_read_at_scrape_time(self):
        world, metrics = make_metrics(("alpha", {}))
        world.agent().wake("test")
        world.settle()
        self.assertEqual(sample(metrics, "orchestrator_agent_state", agent="alpha",
                                state="ready"), 1.0)

    def test_in_flight_requests_are_a_gauge_per_agent(self):
        world, metrics = make_metrics(("alpha", {}))
        world.agent().request_started()
        self.assertEqual(sample(metrics, "orchestrator_agent_requests_in_flight",
                                agent="alpha"), 1.0)

    def test_leases_are_a_gauge_per_agent(self):
        world, metrics = make_metrics(("alpha", {}))
        world.agent().wake("test")
        world.settle()
        world.agent().leases.acquire(seconds=60, reason="job")
        self.assertEqual(sample(metrics, "orchestrator_agent_leases", agent="alpha"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_agent_registered_routes", agent="alpha"),
                         0.0)

    def test_sleeps_at_is_absent_for_an_agent_that_will_not_sleep(self):
        world, metrics = make_metrics(("steady", ALWAYS_ON))
        self.assertIsNone(sample(metrics, "orchestrator_agent_sleeps_at_timestamp_seconds",
                                 agent="steady"))

    def test_held_requests_and_overflows_come_from_the_hold_counter(self):
        world, metrics = make_metrics(("alpha", {}))
        holds = HoldCounter(max_total=1)
        metrics.collector.holds = holds
        holds.try_hold("alpha", 5)
        holds.try_hold("alpha", 5)
        self.assertEqual(sample(metrics, "orchestrator_held_requests", agent="alpha"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_hold_overflows_total"), 1.0)

    def test_swarm_calls_and_errors_are_counted_by_call(self):
        world, metrics = make_metrics(("alpha", {}))
        before = sample(metrics, "orchestrator_swarm_calls_total", call="status")
        self.failureResultOf(world.swarm.status("nobody"))
        self.assertEqual(sample(metrics, "orchestrator_swarm_calls_total", call="status"),
                         before + 1)
        self.assertEqual(sample(metrics, "orchestrator_swarm_call_errors_total",
                                call="status"), 1.0)

    def test_consumers_are_labelled_by_kind_and_place_never_by_url(self):
        world, metrics = make_metrics(("alpha", {}), consumers=[FakeConsumer()])
        self.assertEqual(sample(metrics, "orchestrator_event_consumer_delivered_events_total",
                                consumer="webhook-0"), 7.0)
        self.assertEqual(sample(metrics, "orchestrator_event_consumer_failed_events_total",
                                consumer="webhook-0"), 2.0)
        self.assertEqual(sample(metrics, "orchestrator_event_consumer_dropped_events_total",
                                consumer="webhook-0"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_event_consumer_queued_events",
                                consumer="webhook-0"), 3.0)

    def test_event_stream_subscribers(self):
        world, metrics = make_metrics(("alpha", {}))
        metrics.collector.subscribers = FakeStream()
        self.assertEqual(sample(metrics, "orchestrator_admin_event_subscribers"), 2.0)
        self.assertEqual(sample(metrics, "orchestrator_admin_event_subscribers_dropped_total"),
                         1.0)


class EventCountingTests(SynchronousTestCase):
    def test_every_event_type_is_there_from_the_start(self):
        world, metrics = make_metrics(("alpha", {}))
        self.assertEqual(sample(metrics, "orchestrator_events_total", type="restart.exhausted"),
                         0.0)

    def test_events_are_counted_by_type(self):
        world, metrics = make_metrics(("alpha", {}))
        world.bus.emit("swarm.disconnected", None)
        self.assertEqual(sample(metrics, "orchestrator_events_total",
                                type="swarm.disconnected"), 1.0)

    def test_a_wake_is_counted_with_its_duration_and_each_phase(self):
        world, metrics = make_metrics(("alpha", {}))
        world.agent().wake("test")
        world.settle()
        self.assertEqual(sample(metrics, "orchestrator_wakes_total", agent="alpha",
                                outcome="ready"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_wake_duration_seconds_count",
                                agent="alpha", outcome="ready"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_wake_phase_duration_seconds_count",
                                agent="alpha", phase="scheduling"), 1.0)

    def test_a_failed_wake_is_counted_with_its_time_since_the_wake_began(self):
        world, metrics = make_metrics(("alpha", {}))
        world.bus.emit("agent.wake", "alpha", previous="sleeping", state="starting")
        world.clock.advance(4)
        world.bus.emit("agent.degraded", "alpha", previous="starting", state="degraded",
                       reason="no such image")
        self.assertEqual(sample(metrics, "orchestrator_wakes_total", agent="alpha",
                                outcome="failed"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_wake_duration_seconds_sum",
                                agent="alpha", outcome="failed"), 4.0)

    def test_exhausted_restarts_are_counted_per_agent(self):
        world, metrics = make_metrics(("alpha", {}))
        world.bus.emit("restart.exhausted", "alpha", attempts=3)
        self.assertEqual(sample(metrics, "orchestrator_restarts_exhausted_total",
                                agent="alpha"), 1.0)

    def test_a_degraded_ready_agent_is_not_a_failed_wake(self):
        world, metrics = make_metrics(("steady", ALWAYS_ON))
        world.bus.emit("agent.degraded", "steady", previous="ready", state="degraded")
        self.assertIsNone(sample(metrics, "orchestrator_wakes_total", agent="steady",
                                 outcome="failed"))


class TrafficTests(SynchronousTestCase):
    def test_requests_are_counted_by_agent_method_class_and_status_class(self):
        world, metrics = make_metrics(("alpha", {}))
        metrics.traffic.request_finished("alpha", b"GET", 204, 0.02)
        metrics.traffic.request_finished("alpha", b"BREW", 418, 0.01)
        self.assertEqual(sample(metrics, "orchestrator_http_requests_total", agent="alpha",
                                method="GET", code="2xx"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_http_requests_total", agent="alpha",
                                method="other", code="4xx"), 1.0)
        self.assertEqual(sample(metrics, "orchestrator_http_request_duration_seconds_count",
                                agent="alpha"), 2.0)

    def test_a_host_no_agent_serves_is_counted_without_an_agent(self):
        world, metrics = make_metrics(("alpha", {}))
        metrics.traffic.request_finished(None, b"GET", 404, 0.001)
        self.assertEqual(sample(metrics, "orchestrator_http_requests_total", agent="",
                                code="4xx"), 1.0)

    def test_frames_are_counted_by_direction(self):
        world, metrics = make_metrics(("alpha", {}))
        metrics.traffic.frame_relayed("alpha", TO_AGENT)
        metrics.traffic.frame_relayed("alpha", TO_CLIENT)
        metrics.traffic.frame_relayed("alpha", TO_CLIENT)
        self.assertEqual(sample(metrics, "orchestrator_websocket_frames_total", agent="alpha",
                                direction="to_client"), 2.0)

    def test_method_and_status_classes_are_bounded(self):
        self.assertEqual([method_class(m) for m in (b"get", b"PATCH", b"X" * 100)],
                         ["GET", "PATCH", "other"])
        self.assertEqual([status_class(c) for c in (200, 302, 503, 99, 600)],
                         ["2xx", "3xx", "5xx", "other", "other"])


class CardinalityTests(SynchronousTestCase):
    def test_a_removed_agents_series_go_with_it(self):
        world, metrics = make_metrics(("alpha", {}), ("beta", {}))
        metrics.traffic.request_finished("beta", b"GET", 200, 0.01)
        world.agents.apply(ConfigDiff(removed=("beta",)))
        self.assertEqual(label_values(metrics, "orchestrator_http_requests_total", "agent"),
                         set())
        self.assertEqual(label_values(metrics, "orchestrator_agent_state", "agent"), {"alpha"})

    def test_agent_labels_are_the_configured_agents(self):
        world, metrics = make_metrics(("alpha", {}), ("beta", {}))
        metrics.traffic.request_finished("alpha", b"GET", 200, 0.01)
        self.assertEqual(label_values(metrics, "orchestrator_agent_state", "agent"),
                         {"alpha", "beta"})


class ExpositionTests(SynchronousTestCase):
    def render(self, metrics, path=b"/metrics", method=b"GET", accept=None):
        request = DummyRequest(path.split(b"/")[1:])
        request.path, request.method = path, method
        if accept:
            request.requestHeaders.setRawHeaders(b"accept", [accept])
        body = MetricsResource(metrics.registry, Clock()).render(request)
        return request, body

    def test_text_format_by_default(self):
        world, metrics = make_metrics(("alpha", {}))
        request, body = self.render(metrics)
        self.assertIn(b"orchestrator_agent_state{", body)
        self.assertTrue(request.responseHeaders.getRawHeaders(b"content-type")[0]
                        .startswith(b"text/plain"))

    def test_openmetrics_when_asked(self):
        world, metrics = make_metrics(("alpha", {}))
        request, body = self.render(metrics, accept=b"application/openmetrics-text")
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_other_paths_are_json_404(self):
        world, metrics = make_metrics(("alpha", {}))
        request, body = self.render(metrics, path=b"/other")
        self.assertEqual((request.responseCode, body),
                         (404, b'{"error": "metrics are at /metrics"}'))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"),
                         [b"application/json"])

    def test_other_methods_are_json_405(self):
        world, metrics = make_metrics(("alpha", {}))
        request, body = self.render(metrics, method=b"POST")
        self.assertEqual(request.responseCode, 405)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"allow"), [b"GET, HEAD"])
