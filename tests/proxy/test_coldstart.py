"""
Cold starts people don't notice: the waiting page, long-poll health, hold mode,
estimated_wait and phases, X-Cold-Start, the client helper.
"""

from twisted.internet.defer import DeferredSemaphore
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import ColdStart, ColdStartConfig, ProxyConfig
from orchestrator.proxy.waiting import CLIENT_JS, WaitingPage
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import make_agent
from tests.http.test_negotiation import CHROME_ACCEPT
from tests.proxy.harness import ProxyHarness, Response


def cold_harness(**config):
    return ProxyHarness(swarm=FakeSwarm(auto_run=False), **config)


class WaitingPageTests(SynchronousTestCase):
    def test_browser_gets_the_waiting_page_with_503_and_retry_after(self):
        harness = cold_harness()
        response = harness.get(extra=b"Accept: " + CHROME_ACCEPT + b"\r\n")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header(b"retry-after"), b"3")
        self.assertTrue(response.header(b"content-type").startswith(b"text/html"))
        self.assertIn(b"Starting <strong>alpha</strong>", response.body)
        self.assertIn(b'/api/health?wait=30', response.body)
        self.assertIn(b'<noscript><meta http-equiv="refresh" content="3"></noscript>', response.body)

    def test_other_clients_keep_the_json_body(self):
        response = cold_harness().get(extra=b"Accept: */*\r\n")
        self.assertEqual(response.json()["status"], "starting")

    def test_page_escapes_what_it_shows(self):
        page = WaitingPage().render({"status": "degraded", "agent": "a",
                                     "reason": "<script>alert(1)</script>"}, 3)
        self.assertNotIn(b"<script>alert(1)", page)
        self.assertIn(b"&lt;script&gt;", page)

    def test_agent_can_bring_its_own_template(self):
        path = self.mktemp()
        with open(path, "w") as template:
            template.write("<p>$agent is $status, about ${estimated_wait}s</p>")
        harness = cold_harness(cold_start=ColdStartConfig(page=path))
        response = harness.get(extra=b"Accept: text/html\r\n")
        self.assertEqual(response.body, b"<p>alpha is starting, about nulls</p>")

    def test_client_helper_is_served_on_every_agent_host(self):
        response = cold_harness().get(b"/api/client.js")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.header(b"content-type").startswith(b"text/javascript"))
        self.assertEqual(response.body, CLIENT_JS)


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
        self.assertEqual(harness.agent._settled_waiters, [])

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


class WakeTimingTests(SynchronousTestCase):
    def test_phase_moves_from_scheduling_to_probing(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False), healthy=False)
        fixture.agent.admit(ignored=False)
        self.assertEqual(fixture.agent.health()["phase"], "scheduling")
        fixture.swarm.run_tasks("alpha")
        fixture.clock.advance(0.05)
        self.assertEqual(fixture.agent.health()["phase"], "probing")

    def test_estimated_wait_absent_until_a_wake_was_measured(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        self.assertNotIn("estimated_wait", fixture.agent.health())

    def test_estimated_wait_counts_down_from_recent_wakes(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        agent, swarm, clock = fixture.agent, fixture.swarm, fixture.clock
        agent.admit(ignored=False)
        clock.advance(2)
        swarm.run_tasks("alpha")
        clock.advance(0.05)  # ready after ~2.05s
        clock.advance(900)   # asleep again
        self.assertIs(agent.state, AgentState.SLEEPING)
        agent.admit(ignored=False)
        self.assertEqual(agent.health()["estimated_wait"], 2.0)
        clock.advance(1.5)
        self.assertEqual(agent.health()["estimated_wait"], 0.5)

    def test_ready_event_carries_the_phase_durations(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(1)
        fixture.swarm.run_tasks("alpha")
        fixture.clock.advance(0.05)
        ready = [e for e in fixture.bus.events if e.type == "agent.ready"][-1]
        self.assertEqual(set(ready.fields["phases"]), {"scheduling", "probing"})
        self.assertAlmostEqual(ready.fields["wake_seconds"], 1.05, places=2)

    def test_cold_start_header_only_on_the_first_response_after_a_wake(self):
        harness = cold_harness()
        harness.get()
        harness.fixture.swarm.run_tasks("alpha")
        harness.clock.advance(0.05)
        first, second = harness.get(), harness.get()
        self.assertEqual(first.header(b"x-cold-start"), b"50")
        self.assertIsNone(second.header(b"x-cold-start"))

    def test_concurrent_wakes_are_capped_across_agents(self):
        slots = DeferredSemaphore(1)
        swarm = FakeSwarm(auto_run=False)
        swarm.add_service("beta", replicas=0)
        first = make_agent(swarm=swarm)
        from orchestrator.agents.runtime import Agent
        from tests.helpers import ScriptedProber, agent_config
        # Both agents share one slot: the second waits, "queued", without scaling.
        a = Agent(agent_config("alpha"), swarm=swarm, prober=ScriptedProber(), bus=first.bus,
                  reactor=first.clock, wake_slots=slots)
        b = Agent(agent_config("beta"), swarm=swarm, prober=ScriptedProber(), bus=first.bus,
                  reactor=first.clock, wake_slots=slots)
        a.start(), b.start()
        a.admit(ignored=False)
        b.admit(ignored=False)
        self.assertEqual(b.health()["phase"], "queued")
        self.assertEqual(swarm.scale_calls, [("alpha", 1)])
        swarm.run_tasks("alpha")
        first.clock.advance(0.05)
        self.assertIs(a.state, AgentState.READY)
        self.assertEqual(swarm.scale_calls, [("alpha", 1), ("beta", 1)])
