"""
The admin API: agents and why they are awake, wake and sleep (idempotent, with
?wait=N), the running configuration redacted, the token, and JSON for every error.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import AdminConfig, ConsumerConfig, ConsumerType, EventsConfig
from orchestrator.swarm.memory import FakeSwarm
from tests.admin.builders import TOKEN, make_admin
from tests.agents.world import ALWAYS_ON

AGENTS = (("alpha", {"hosts": ("alpha.example.com", "*.alpha.example.com")}),
          ("steady", ALWAYS_ON))


class Calls:
    """
    Requests to an admin world, answered synchronously.
    """

    def call(self, method, path, token=None, headers=None, **kwargs):
        code, body, _ = self.call_with_headers(method, path, token, headers, **kwargs)
        return code, body

    def call_with_headers(self, method, path, token=None, headers=None, **kwargs):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.successResultOf(self.admin.client.request(
            method, "http://127.0.0.1:9090" + path, headers=headers, **kwargs))
        text = self.successResultOf(response.content())
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return response.code, body, response.headers

    def started(self, method, path, **kwargs):
        """
        A request whose answer is not there yet (it waits).
        """
        return self.admin.client.request(method, "http://127.0.0.1:9090" + path, **kwargs)

    def finish(self, pending):
        self.admin.client.flush()
        response = self.successResultOf(pending)
        return response.code, json.loads(self.successResultOf(response.content()))


class AgentsTests(Calls, SynchronousTestCase):
    def setUp(self):
        self.admin = make_admin(*AGENTS)

    def test_healthz(self):
        self.assertEqual(self.call("GET", "/healthz"), (200, {"status": "ok"}))

    def test_lists_every_agent_with_its_state_and_the_last_event_id(self):
        self.admin.world.bus.emit("swarm.reconnected", None)
        code, body = self.call("GET", "/api/agents")
        self.assertEqual(code, 200)
        self.assertEqual([(a["agent"], a["status"], a["policy"]) for a in body["agents"]],
                         [("alpha", "sleeping", "on_demand"), ("steady", "ready", "always_on")])
        self.assertEqual(body["last_event_id"], "b00t.1")

    def test_one_agent_with_its_service_hosts_and_origin(self):
        code, body = self.call("GET", "/api/agents/alpha")
        self.assertEqual((code, body["service"], body["hosts"], body["origin"]),
                         (200, "alpha", ["alpha.example.com", "*.alpha.example.com"], "config"))

    def test_a_sleeping_agent_is_not_awake(self):
        self.assertIsNone(self.call("GET", "/api/agents/alpha")[1]["awake"])

    def test_why_awake_names_requests_in_flight_and_last_activity(self):
        agent = self.admin.world.agent("alpha")
        agent.wake("test")
        self.admin.world.settle()
        agent.request_started()
        self.admin.clock.advance(12)
        awake = self.call("GET", "/api/agents/alpha")[1]["awake"]
        self.assertEqual(awake["in_flight"], 1)
        self.assertEqual(awake["idle_seconds"], 12.0)
        self.assertIn("1 request in flight", awake["reasons"])
        self.assertIn("last activity 12s ago (idle timeout 900s)", awake["reasons"])

    def test_why_awake_counts_sockets_with_recent_frames_only(self):
        agent = self.admin.world.agent("alpha")
        agent.wake("test")
        self.admin.world.settle()
        now = self.admin.clock.seconds()
        for last_frame in (now - 5, now - 2000, None):
            socket = type("Socket", (), {"last_frame": last_frame})()
            agent.connections.add(socket)
        awake = self.call("GET", "/api/agents/alpha")[1]["awake"]
        self.assertEqual((awake["websockets"], awake["websockets_with_recent_frames"]), (3, 1))
        self.assertIn("1 WebSocket with frames in the last 900s", awake["reasons"])

    def test_why_awake_names_busy_leases_and_lists_them(self):
        agent = self.admin.world.agent("alpha")
        agent.wake("test")
        self.admin.world.settle()
        lease = agent.leases.acquire(seconds=600, reason="nightly build")
        self.admin.clock.advance(100)
        body = self.call("GET", "/api/agents/alpha")[1]
        self.assertEqual([(item["id"], item["reason"], item["remaining"])
                          for item in body["leases"]], [(lease.id, "nightly build", 500.0)])
        self.assertEqual(body["awake"]["leases"], 1)
        self.assertIn("1 busy lease (for 500s more)", body["awake"]["reasons"])

    def test_registered_routes_are_listed(self):
        from orchestrator.config.model import Backend

        agent = self.admin.world.agent("alpha")
        agent.wake("test")
        self.admin.world.settle()
        self.admin.world.agents.register("alpha", "preview.alpha.example.com",
                                         Backend("http", "127.0.0.1", 3000),
                                         self.admin.clock.seconds())
        body = self.call("GET", "/api/agents/alpha")[1]
        self.assertEqual(body["routes"], [{"host": "preview.alpha.example.com",
                                           "backend": "http://127.0.0.1:3000",
                                           "registered_at": self.admin.clock.seconds()}])
        self.assertIn("preview.alpha.example.com", body["hosts"])

    def test_when_it_will_sleep_and_its_recent_wakes(self):
        agent = self.admin.world.agent("alpha")
        agent.wake("test")
        self.admin.world.settle()
        self.admin.clock.advance(100)
        body = self.call("GET", "/api/agents/alpha")[1]
        self.assertEqual(body["sleeps_in"], 800.0)
        self.assertEqual(body["sleeps_at"], body["time"] + 800.0)
        self.assertEqual(len(body["recent_wakes"]), 1)
        self.assertTrue(body["last_wake"]["succeeded"])
        self.assertIn("scheduling", body["last_wake"]["phases"])

    def test_unknown_agent_is_a_json_404(self):
        self.assertEqual(self.call("GET", "/api/agents/nobody"),
                         (404, {"error": "no agent named 'nobody'"}))
        self.assertEqual(self.call("POST", "/api/agents/nobody/wake")[0], 404)

    def test_unknown_endpoint_is_a_json_404(self):
        self.assertEqual(self.call("GET", "/nothing"),
                         (404, {"error": "no such admin endpoint: /nothing"}))

    def test_a_path_that_is_not_utf8_is_a_json_400(self):
        self.assertEqual(self.call("GET", "/api/agents/%ff"),
                         (400, {"error": "the path is not UTF-8"}))

    def test_wrong_method_is_a_json_405_with_allow(self):
        code, body, headers = self.call_with_headers("GET", "/api/agents/alpha/wake")
        self.assertEqual(code, 405)
        self.assertEqual(body["error"], "GET is not allowed on /api/agents/alpha/wake: use POST")
        self.assertEqual(headers.getRawHeaders("allow"), ["POST"])
        self.assertEqual(self.call("DELETE", "/api/agents")[0], 405)

    def test_an_unexpected_failure_is_a_json_500_without_a_traceback(self):
        self.admin.world.agent("alpha").status = lambda: 1 / 0
        code, body = self.call("GET", "/api/agents/alpha")
        self.assertEqual((code, body),
                         (500, {"error": "internal error (see the orchestrator's log)"}))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class WakeTests(Calls, SynchronousTestCase):
    def setUp(self):
        self.admin = make_admin(*AGENTS, swarm=FakeSwarm(auto_run=False))
        self.swarm = self.admin.world.swarm

    def test_wake_answers_202_while_the_agent_starts(self):
        code, body = self.call("POST", "/api/agents/alpha/wake")
        self.assertEqual((code, body["status"]), (202, "starting"))
        self.assertEqual(self.swarm.scale_calls, [("alpha", 1)])

    def test_wake_is_idempotent(self):
        self.call("POST", "/api/agents/alpha/wake")
        self.assertEqual(self.call("POST", "/api/agents/alpha/wake")[0], 202)
        self.assertEqual(self.swarm.scale_calls, [("alpha", 1)])
        self.swarm.run_tasks("alpha")
        self.admin.clock.advance(1)
        code, body = self.call("POST", "/api/agents/alpha/wake")
        self.assertEqual((code, body["status"]), (200, "ready"))
        self.assertEqual(self.swarm.scale_calls, [("alpha", 1)])

    def test_wake_with_wait_answers_once_ready(self):
        pending = self.started("POST", "/api/agents/alpha/wake?wait=30")
        self.assertNoResult(pending)
        self.swarm.run_tasks("alpha")
        self.admin.clock.advance(1)
        code, body = self.finish(pending)
        self.assertEqual((code, body["status"]), (200, "ready"))

    def test_wake_with_wait_answers_202_when_the_wait_is_over(self):
        pending = self.started("POST", "/api/agents/alpha/wake?wait=2")
        self.admin.clock.advance(2.5)
        code, body = self.finish(pending)
        self.assertEqual((code, body["status"]), (202, "starting"))

    def test_wake_with_wait_answers_503_when_the_wake_fails(self):
        pending = self.started("POST", "/api/agents/alpha/wake?wait=120")
        self.swarm.fail_tasks("alpha", "No such image: agent:latest")
        self.admin.clock.advance(1)
        code, body = self.finish(pending)
        self.assertEqual((code, body["status"]), (503, "degraded"))
        self.assertIn("No such image", body["error"])

    def test_a_bad_wait_is_a_400_naming_it(self):
        self.assertEqual(self.call("POST", "/api/agents/alpha/wake?wait=soon"),
                         (400, {"error": "wait must be a number of seconds, got 'soon'"}))
        self.assertEqual(self.call("POST", "/api/agents/alpha/wake?wait=-1")[0], 400)
        self.assertEqual(self.swarm.scale_calls, [])

    def test_always_on_agents_are_not_ours_to_wake(self):
        code, body = self.call("POST", "/api/agents/steady/wake")
        self.assertEqual(code, 409)
        self.assertIn("always-on", body["error"])
        self.assertEqual(body["status"], "ready")


class SleepTests(Calls, SynchronousTestCase):
    def setUp(self):
        self.admin = make_admin(*AGENTS)
        self.swarm = self.admin.world.swarm
        self.admin.world.agent("alpha").wake("test")
        self.admin.world.settle()

    def test_sleep_scales_an_on_demand_agent_to_zero(self):
        code, body = self.call("POST", "/api/agents/alpha/sleep")
        self.assertEqual((code, body["status"]), (200, "sleeping"))
        self.assertEqual(self.swarm.scale_calls[-1], ("alpha", 0))

    def test_sleep_is_idempotent(self):
        self.call("POST", "/api/agents/alpha/sleep")
        self.assertEqual(self.call("POST", "/api/agents/alpha/sleep")[0], 200)
        self.assertEqual(self.swarm.scale_calls.count(("alpha", 0)), 1)

    def test_sleep_drains_first_and_answers_202_meanwhile(self):
        agent = self.admin.world.agent("alpha")
        socket = _Lingering(agent.connections)
        code, body = self.call("POST", "/api/agents/alpha/sleep")
        self.assertEqual((code, body["status"]), (202, "ready"))
        self.assertTrue(socket.asked)
        socket.close()
        self.assertEqual(agent.state.value, "sleeping")

    def test_sleep_with_wait_answers_once_asleep(self):
        agent = self.admin.world.agent("alpha")
        socket = _Lingering(agent.connections)
        pending = self.started("POST", "/api/agents/alpha/sleep?wait=60")
        self.assertNoResult(pending)
        socket.close()
        code, body = self.finish(pending)
        self.assertEqual((code, body["status"]), (200, "sleeping"))

    def test_always_on_agents_are_not_ours_to_put_to_sleep(self):
        code, body = self.call("POST", "/api/agents/steady/sleep")
        self.assertEqual(code, 409)
        self.assertIn("cannot be put to sleep", body["error"])
        self.assertNotIn(("steady", 0), self.swarm.scale_calls)


class _Lingering:
    """
    A relayed connection that closes only when the test says so.
    """

    def __init__(self, registry):
        self.registry, self.asked = registry, False
        registry.add(self)

    def go_away(self):
        self.asked = True

    def abort(self):
        self.registry.discard(self)

    def close(self):
        self.registry.discard(self)


class TokenTests(Calls, SynchronousTestCase):
    def setUp(self):
        self.admin = make_admin(*AGENTS, token=TOKEN)

    def test_without_the_token_requests_are_a_json_401(self):
        code, body, headers = self.call_with_headers("GET", "/api/agents")
        self.assertEqual((code, body), (401, {"error": "a valid admin token is required"}))
        self.assertEqual(headers.getRawHeaders("www-authenticate"),
                         ['Bearer realm="orchestrator"'])

    def test_a_wrong_token_is_refused(self):
        self.assertEqual(self.call("GET", "/api/agents", token="wrong")[0], 401)
        self.assertEqual(self.call("POST", "/api/agents/alpha/wake", token="wrong")[0], 401)

    def test_with_the_token_requests_pass(self):
        self.assertEqual(self.call("GET", "/api/agents", token=TOKEN)[0], 200)

    def test_metrics_events_and_config_need_the_token(self):
        for path in ("/metrics", "/api/events", "/api/config"):
            self.assertEqual(self.call("GET", path)[0], 401, path)

    def test_healthz_and_the_dashboards_files_need_no_token(self):
        self.assertEqual(self.call("GET", "/healthz")[0], 200)
        self.assertEqual(self.call("GET", "/")[0], 200)

    def test_the_dashboards_files_are_served_with_their_types(self):
        code, body, headers = self.call_with_headers("GET", "/static/dashboard.js")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders("content-type"),
                         ["text/javascript; charset=utf-8"])
        self.assertIn("default-src 'none'", headers.getRawHeaders("content-security-policy")[0])

    def test_no_other_file_and_no_listing(self):
        for path in ("/static/", "/static/nothing.js", "/static/..%2fapp.py",
                     "/static/__init__.py"):
            code, body = self.call("GET", path)
            self.assertEqual(code, 404, path)
            self.assertIn("error", body, path)

    def test_a_reload_changes_the_token(self):
        self.admin.app.reconfigure(AdminConfig(token="another-token-0123456"))
        self.assertEqual(self.call("GET", "/api/agents", token=TOKEN)[0], 401)
        self.assertEqual(self.call("GET", "/api/agents", token="another-token-0123456")[0], 200)


class ConfigTests(Calls, SynchronousTestCase):
    def test_the_running_configuration_with_secrets_redacted(self):
        self.admin = make_admin(*AGENTS, token=TOKEN)
        self.admin.config = None
        code, body = self.call("GET", "/api/config", token=TOKEN)
        self.assertEqual(code, 200)
        self.assertEqual(body["admin"]["token"], "<redacted>")
        self.assertNotIn(TOKEN, json.dumps(body))
        self.assertEqual(body["agents"]["alpha"]["backend"],
                         {"scheme": "http", "host": "127.0.0.1", "port": 18081})
        self.assertEqual(body["agents"]["steady"]["policy"], "always_on")

    def test_an_agents_own_token_is_redacted_too(self):
        import attrs

        from orchestrator.admin.redact import running_configuration

        admin = make_admin(*AGENTS)
        secret = "agent-token-0123456789abcdef"
        agents = (attrs.evolve(admin.config.agents[0], token=secret), *admin.config.agents[1:])
        shown = running_configuration(attrs.evolve(admin.config, agents=agents))
        self.assertEqual(shown["agents"]["alpha"]["token"], "<redacted>")
        self.assertNotIn(secret, json.dumps(shown))

    def test_consumer_urls_keep_only_their_host(self):
        from orchestrator.admin.redact import running_configuration

        admin = make_admin(*AGENTS)
        url = "https://hooks.example.com/services/T000/B000/XXXXsecretXXXX"
        config = admin.config.__class__(
            source="x.yaml", agents=admin.config.agents,
            events=EventsConfig(consumers=(ConsumerConfig(type=ConsumerType.SLACK, url=url),)))
        shown = running_configuration(config)
        self.assertEqual(shown["events"]["consumers"][0]["url"],
                         "https://hooks.example.com/<redacted>")
        self.assertNotIn("XXXXsecretXXXX", json.dumps(shown))
        self.assertIsNone(shown["admin"]["token"])


class MetricsTests(Calls, SynchronousTestCase):
    def test_metrics_on_the_admin_listener(self):
        self.admin = make_admin(*AGENTS)
        code, body, headers = self.call_with_headers("GET", "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b'orchestrator_agent_state{agent="alpha",state="sleeping"} 1.0', body)


class EventsTests(Calls, SynchronousTestCase):
    def setUp(self):
        self.admin = make_admin(*AGENTS, admin=AdminConfig(max_event_subscribers=1))

    def test_json_asked_gets_the_buffered_events(self):
        self.admin.world.bus.emit("swarm.reconnected", None)
        code, body = self.call("GET", "/api/events", headers={"Accept": "application/json"})
        self.assertEqual(code, 200)
        self.assertEqual([(e["id"], e["event"]) for e in body["events"]],
                         [("b00t.1", "swarm.reconnected")])
        self.assertEqual(body["last_event_id"], "b00t.1")

    def test_beyond_the_subscriber_cap_a_json_503(self):
        self.started("GET", "/api/events")
        code, body, headers = self.call_with_headers("GET", "/api/events")
        self.assertEqual((code, body),
                         (503, {"error": "the event stream has 1 subscribers, the most allowed"}))
        self.assertEqual(headers.getRawHeaders("retry-after"), ["10"])


class HostTests(SynchronousTestCase):
    """
    Without a token, the admin API answers only to an address or localhost in Host: a
    browser sent to an attacker's name resolving here (DNS rebinding) gets nothing.
    """

    def code(self, admin, host, token=None):
        headers = {"Host": host}
        if token:
            headers["Authorization"] = f"bearer {token}"
        response = self.successResultOf(admin.client.request(
            "GET", "http://127.0.0.1:9090/api/agents", headers=headers))
        return response.code

    def test_without_a_token_only_addresses_and_localhost(self):
        admin = make_admin(*AGENTS)
        for host, code in (("127.0.0.1:9090", 200), ("[::1]:9090", 200), ("localhost", 200),
                           ("10.0.0.5", 200), ("rebind.attacker.example", 403),
                           ("orchestrator:9090", 403)):
            with self.subTest(host=host):
                self.assertEqual(self.code(admin, host), code)

    def test_with_a_token_any_name_and_the_scheme_in_any_case(self):
        admin = make_admin(*AGENTS, token=TOKEN)
        self.assertEqual(self.code(admin, "orchestrator:9090", token=TOKEN), 200)
        self.assertEqual(self.code(admin, "orchestrator:9090"), 401)
