"""
The proxy's resource end to end in memory: routing, the 503 protocol, /api/health,
answers of its own to requests with bodies, the handlers it decides, and relaying to a
backend (a real twisted.web Site, or a server that breaks HTTP) through the proxy's own
client over in-memory connections.
"""

from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from orchestrator.config.model import Backend as ConfiguredBackend
from orchestrator.http.answers import LocalAnswer
from orchestrator.interfaces import IRequestHandler
from orchestrator.proxy.exchange import BackendExchange
from orchestrator.proxy.holding import Waiter
from orchestrator.swarm.memory import FakeSwarm
from tests.proxy.harness import ProxyHarness, Response


class RoutingTests(SynchronousTestCase):
    def test_unknown_host_is_404_json(self):
        response = ProxyHarness().get(host=b"nobody.example.com")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.json(), {"error": "no agent serves host 'nobody.example.com'"})

    def test_health_of_sleeping_agent_is_200_and_does_not_wake_it(self):
        harness = ProxyHarness()
        response = harness.get(b"/api/health")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json(), {"status": "sleeping", "agent": "alpha"})
        self.assertEqual(harness.fixture.swarm.scale_calls, [])

    def test_health_is_not_activity(self):
        harness = ProxyHarness(replicas=1)
        before = harness.agent.last_activity
        harness.clock.advance(100)
        harness.get(b"/api/health")
        self.assertEqual(harness.agent.last_activity, before)

    def test_request_for_sleeping_agent_gets_503_starting_and_wakes_it(self):
        harness = ProxyHarness(swarm=FakeSwarm(auto_run=False))
        response = harness.get(b"/some/page")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header(b"retry-after"), b"3")
        self.assertEqual(response.json(),
                         {"status": "starting", "agent": "alpha", "phase": "scheduling"})
        self.assertEqual(harness.fixture.swarm.scale_calls, [("alpha", 1)])

    def test_uptime_monitor_gets_503_sleeping_without_waking(self):
        from orchestrator.config.model import IdleConfig

        harness = ProxyHarness(idle=IdleConfig(ignore_user_agents=("UptimeRobot",)))
        response = harness.get(extra=b"User-Agent: UptimeRobot/2.0\r\n")
        self.assertEqual((response.code, response.json()["status"]), (503, "sleeping"))
        self.assertEqual(harness.fixture.swarm.scale_calls, [])

    def test_poll_protocol_503_then_ready_then_200(self):
        harness = ProxyHarness(swarm=FakeSwarm(auto_run=False))
        self.assertEqual(harness.get().code, 503)
        self.assertEqual(harness.get(b"/api/health").json()["status"], "starting")
        harness.fixture.swarm.run_tasks("alpha")
        harness.clock.advance(0.05)
        self.assertEqual(harness.get(b"/api/health").json()["status"], "ready")
        self.assertEqual(harness.get().code, 200)




class LocalAnswerWithBodyTests(SynchronousTestCase):
    """
    A request with a body that the proxy answers itself gets its answer, its body is
    read and dropped, and the connection carries the next request.
    """

    def answer_to(self, head: bytes, body: bytes = b"hello", **harness):
        harness = ProxyHarness(**{"swarm": FakeSwarm(auto_run=False), **harness})
        protocol, transport = harness.send(
            head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        response = Response(transport.value())
        transport.clear()
        protocol.dataReceived(b"GET /api/health HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertEqual(Response(transport.value()).code, 200)  # the connection still works
        self.assertEqual(self.flushLoggedErrors(), [])
        return response

    def test_post_to_a_sleeping_agent_gets_503(self):
        response = self.answer_to(b"POST /hook HTTP/1.1\r\nHost: alpha.example.com\r\n")
        self.assertEqual((response.code, response.json()["status"]), (503, "starting"))

    def test_chunked_post_to_a_sleeping_agent_gets_503(self):
        harness = ProxyHarness(swarm=FakeSwarm(auto_run=False))
        _, transport = harness.send(b"POST /hook HTTP/1.1\r\nHost: alpha.example.com\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual(Response(transport.value()).code, 503)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_post_to_an_unknown_host_gets_404(self):
        response = self.answer_to(b"POST / HTTP/1.1\r\nHost: nobody.example.com\r\n")
        self.assertEqual(response.code, 404)

    def test_post_without_a_host_gets_400(self):
        response = self.answer_to(b"POST / HTTP/1.1\r\n")
        self.assertEqual(response.json(), {"error": "missing Host header"})

    def test_post_with_two_hosts_gets_400(self):
        response = self.answer_to(
            b"POST / HTTP/1.1\r\nHost: alpha.example.com\r\nHost: beta.example.com\r\n")
        self.assertEqual(response.json(), {"error": "more than one Host header"})

    def test_post_with_an_invalid_host_gets_400(self):
        response = self.answer_to(b"POST / HTTP/1.1\r\nHost: alpha.example.com/x\r\n")
        self.assertEqual(response.json(), {"error": "invalid Host header"})

    def test_health_with_a_body_gets_200(self):
        response = self.answer_to(b"GET /api/health HTTP/1.1\r\nHost: alpha.example.com\r\n")
        self.assertEqual((response.code, response.json()["status"]), (200, "sleeping"))

    def test_client_helper_with_a_body_gets_200(self):
        response = self.answer_to(b"GET /api/client.js HTTP/1.1\r\nHost: alpha.example.com\r\n")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.header(b"content-type").startswith(b"text/javascript"))


class HandlerTests(SynchronousTestCase):
    """
    Whatever the resource decides for a request provides IRequestHandler, and its
    request_body is where twisted.web writes the body.
    """

    def handler_of(self, head: bytes, **harness):
        harness = ProxyHarness(**harness)
        protocol, _ = harness.send(head + b"Content-Length: 10\r\n\r\nhalf")
        (request,) = protocol.requests  # the body is not complete: still in progress
        self.assertTrue(verifyObject(IRequestHandler, request.handler))
        self.assertIs(request.content, request.handler.request_body)
        self.assertEqual(request.content.tell(), 4)
        return request.handler

    def test_an_answer_of_the_proxys_own(self):
        handler = self.handler_of(b"POST / HTTP/1.1\r\nHost: nobody.example.com\r\n")
        self.assertIsInstance(handler, LocalAnswer)

    def test_an_exchange_with_the_backend(self):
        handler = self.handler_of(b"POST / HTTP/1.1\r\nHost: alpha.example.com\r\n", replicas=1)
        self.assertIsInstance(handler, BackendExchange)

    def test_a_request_held_while_the_agent_wakes(self):
        handler = self.handler_of(
            b"POST / HTTP/1.1\r\nHost: alpha.example.com\r\nPrefer: wait=10\r\n",
            swarm=FakeSwarm(auto_run=False))
        self.assertIsInstance(handler, Waiter)


class RegisteredRouteTests(SynchronousTestCase):
    """
    A host an agent registered goes through the same front door to its own backend, and
    counts as the agent's activity; once the agent sleeps, it falls back to the agent's
    wildcard and wakes it.
    """

    HOST = b"preview-1.alpha.example.com"

    def harness(self, replicas=1):
        harness = ProxyHarness(replicas=replicas, serving=False,
                               hosts=("alpha.example.com", "*.alpha.example.com"))
        harness.routes.register("alpha", self.HOST.decode(),
                                ConfiguredBackend("http", "127.0.0.1", 3000),
                                harness.clock.seconds())
        return harness

    def test_a_registered_host_is_relayed_to_its_own_backend(self):
        harness = self.harness()
        harness.send(b"GET /app HTTP/1.1\r\nHost: " + self.HOST + b"\r\n\r\n")
        self.assertEqual(harness.network.pending(), [("127.0.0.1", 3000)])

    def test_its_traffic_is_the_agents_activity(self):
        harness = self.harness()
        harness.clock.advance(100)
        harness.send(b"GET / HTTP/1.1\r\nHost: " + self.HOST + b"\r\n\r\n")
        self.assertEqual(harness.agent.last_activity, harness.clock.seconds())

    def test_once_the_agent_sleeps_the_host_wakes_it(self):
        harness = self.harness()
        self.successResultOf(harness.agent.sleep(reason="admin"))
        harness.fixture.swarm.auto_run = False
        response = harness.get(host=self.HOST)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.json()["agent"], "alpha")
        self.assertEqual(harness.fixture.swarm.scale_calls[-1], ("alpha", 1))


class PublicReasonTests(SynchronousTestCase):
    """
    What Swarm said about a failed agent (image names, registry addresses, node errors)
    stays in the admin API, the events and the logs: public answers give its cause.
    """

    SECRET = "registry.internal:5000/alpha:2"

    def failed_wake(self, **harness):
        harness = ProxyHarness(swarm=FakeSwarm(auto_run=False), **harness)
        harness.get()
        harness.fixture.swarm.fail_tasks("alpha", f"No such image: {self.SECRET}")
        harness.clock.advance(0.05)
        return harness

    def test_health_says_a_wake_failed(self):
        harness = self.failed_wake()
        body = harness.get(b"/api/health").json()
        self.assertEqual(body, {"status": "degraded", "agent": "alpha",
                                "reason": "a wake failed"})

    def test_the_503_json_and_the_waiting_page_leave_swarms_text_out(self):
        harness = self.failed_wake()
        for extra in (b"", b"Accept: text/html\r\n"):
            response = harness.get(extra=extra)
            self.assertEqual(response.code, 503)
            self.assertNotIn(self.SECRET.encode(), response.body)

    def test_the_admin_api_and_the_events_keep_swarms_text(self):
        from orchestrator.admin.views import agent_view

        harness = self.failed_wake()
        view = agent_view(harness.agent, harness.agent.status(), origin="config",
                          hosts=list(harness.agent.config.hosts))
        self.assertIn(self.SECRET, view["reason"])
        degraded = [e for e in harness.fixture.bus.events if e.type == "agent.degraded"]
        self.assertIn(self.SECRET, degraded[-1].fields["reason"])

    def test_a_502_of_a_degraded_always_on_agent_gives_the_cause(self):
        from orchestrator.config.model import Policy

        harness = ProxyHarness(replicas=1, policy=Policy.ALWAYS_ON, serving=False,
                               swarm=FakeSwarm(auto_run=False))
        harness.fixture.swarm.kill_tasks("alpha")
        harness.agent.service_changed()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.network.refuse()
        response = Response(transport.value())
        self.assertEqual(response.code, 502)
        self.assertEqual(response.json()["reason"], "the agent's service has no running task")


class RecordingMeter:
    def __init__(self):
        self.requests = []

    def request_finished(self, agent, method, code, seconds):
        self.requests.append((agent, method, code, seconds))

    def frame_relayed(self, agent, direction):
        pass


class MeteringTests(SynchronousTestCase):
    def test_a_relayed_answer_is_metered_with_its_agent_code_and_time(self):
        meter = RecordingMeter()
        harness = ProxyHarness(replicas=1, meter=meter)
        harness.wake()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"GET /slow HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.clock.advance(0.25)
        harness.flush()
        self.assertEqual(meter.requests, [("alpha", b"GET", 200, 0.25)])

    def test_local_answers_are_metered_too(self):
        meter = RecordingMeter()
        harness = ProxyHarness(meter=meter, swarm=FakeSwarm(auto_run=False))
        harness.get(host=b"nobody.example.com")
        harness.get(b"/")
        self.assertEqual([(agent, code) for agent, _, code, _ in meter.requests],
                         [(None, 404), ("alpha", 503)])

    def test_a_client_that_left_counts_as_499(self):
        meter = RecordingMeter()
        harness = ProxyHarness(meter=meter, serving=False, replicas=1)
        harness.wake()
        protocol, transport = harness.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        protocol.connectionLost(ConnectionDone())
        self.assertEqual([code for _, _, code, _ in meter.requests], [499])
