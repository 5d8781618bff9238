"""
Requests parked while their agent wakes (orchestrator.proxy.holding): the long-poll of
/api/health?wait=N, and hold mode with its caps.
"""

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import ColdStart, ColdStartConfig, ProxyConfig
from tests.proxy.harness import ProxyHarness, Response, cold_harness


class LongPollTests(SynchronousTestCase):
    def test_answers_the_moment_the_agent_is_ready(self):
        harness = cold_harness()
        harness.get()  # wakes it
        _, transport = harness.send(
            b"GET /api/health?wait=30 HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.clock.advance(1)
        self.assertEqual(transport.value(), b"")
        harness.fixture.swarm.run_tasks("alpha")
        harness.clock.advance(0.05)
        self.assertEqual(Response(transport.value()).json()["status"], "ready")

    def test_answers_with_the_state_when_the_wait_ends(self):
        harness = cold_harness()
        harness.get()
        _, transport = harness.send(
            b"GET /api/health?wait=10 HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.clock.advance(9.99)
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(0.01)
        self.assertEqual(Response(transport.value()).json()["status"], "starting")

    def test_wait_is_capped(self):
        harness = cold_harness(config=ProxyConfig(max_health_wait=60))
        harness.get()
        _, transport = harness.send(
            b"GET /api/health?wait=3600 HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.clock.advance(60)
        self.assertEqual(Response(transport.value()).code, 200)

    def test_ready_agent_answers_at_once(self):
        harness = ProxyHarness(replicas=1)
        response = harness.get(b"/api/health?wait=30")
        self.assertEqual(response.json()["status"], "ready")

    def test_bad_wait_is_400(self):
        response = cold_harness().get(b"/api/health?wait=soon")
        self.assertEqual(response.code, 400)

    def test_long_poll_costs_one_timer_and_client_leaving_clears_it(self):
        harness = cold_harness()
        harness.get()
        before = len(harness.clock.getDelayedCalls())
        protocol, _ = harness.send(
            b"GET /api/health?wait=30 HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertEqual(len(harness.clock.getDelayedCalls()), before + 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(harness.clock.getDelayedCalls()), before)
        self.assertEqual(harness.agent._core.waiter_count, 0)

    def test_shutdown_releases_long_polls(self):
        harness = cold_harness()
        harness.get()
        _, transport = harness.send(
            b"GET /api/health?wait=30 HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.agent.release_waiters()
        self.assertEqual(Response(transport.value()).json()["status"], "starting")


class HoldTests(SynchronousTestCase):
    def hold_harness(self, **cold_start):
        return cold_harness(cold_start=ColdStartConfig(mode=ColdStart.HOLD, **cold_start))

    def test_held_request_is_forwarded_once_ready(self):
        harness = self.hold_harness()
        _, transport = harness.send(b"GET /hello HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        harness.fixture.swarm.run_tasks("alpha")
        harness.clock.advance(0.05)
        harness.flush()
        response = Response(transport.value())
        self.assertEqual((response.code, response.body), (200, b"hello from backend"))
        self.assertIsNotNone(response.header(b"x-cold-start"))

    def test_held_post_body_reaches_the_backend(self):
        harness = self.hold_harness()
        _, transport = harness.send(b"POST /hook HTTP/1.1\r\nHost: alpha.example.com\r\n"
                                    b"Content-Length: 7\r\n\r\npayload")
        harness.fixture.swarm.run_tasks("alpha")
        harness.clock.advance(0.05)
        harness.flush()
        self.assertEqual(Response(transport.value()).code, 200)
        self.assertEqual(harness.backend.requests[0].body, b"payload")

    def test_hold_times_out_with_the_usual_503(self):
        harness = self.hold_harness(hold_timeout=30)
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.clock.advance(30)
        response = Response(transport.value())
        self.assertEqual((response.code, response.json()["status"]), (503, "starting"))

    def test_beyond_max_held_the_usual_503_is_answered_and_counted(self):
        harness = self.hold_harness(max_held=2)
        transports = [harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")[1]
                      for _ in range(3)]
        self.assertEqual([t.value() for t in transports[:2]], [b"", b""])
        self.assertEqual(Response(transports[2].value()).code, 503)
        self.assertEqual(harness.resource.held.overflow, 1)

    def test_held_clients_that_leave_free_their_slots(self):
        harness = self.hold_harness(max_held=2)
        for _ in range(2):
            protocol, _ = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((harness.resource.held.total, harness.resource.held.per_agent["alpha"]),
                         (0, 0))
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertEqual(transport.value(), b"")  # held, not refused
        self.assertEqual(harness.resource.held.overflow, 0)

    def test_clients_preferring_to_wait_that_leave_free_their_slots(self):
        harness = cold_harness(cold_start=ColdStartConfig(max_held=1))
        request = b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\nPrefer: wait=10\r\n\r\n"
        protocol, _ = harness.send(request)
        protocol.connectionLost(Failure(ConnectionDone()))
        _, transport = harness.send(request)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(harness.resource.held.total, 1)

    def test_client_may_opt_in_with_prefer_wait(self):
        harness = cold_harness()
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n"
                                    b"Prefer: wait=10\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(10)
        self.assertEqual(Response(transport.value()).code, 503)

    def test_held_request_of_a_failed_wake_gets_degraded_at_once(self):
        harness = self.hold_harness()
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.fixture.swarm.fail_tasks("alpha", "No such image: x")
        harness.clock.advance(0.05)
        response = Response(transport.value())
        self.assertEqual((response.code, response.json()["status"]), (503, "degraded"))
        self.assertEqual(harness.resource.held.total, 0)
