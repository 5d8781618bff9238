"""
The agents' API's answers, apart from HTTP: each agent acts on its own routes and
leases only; every refusal says why, with the status a client can act on.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agentapi.api import AgentApi
from orchestrator.agentapi.identity import Identifier, RequestBudget
from orchestrator.config.model import Backend, RegistrationConfig
from orchestrator.states import AgentState
from tests.agents.test_registry import PREVIEW, RegistryHarness, config

ALPHA = b"Bearer alpha-token-0123456789"
BETA = b"Bearer beta-token-0123456789"


class ApiHarness:
    def __init__(self, per_minute=1000, **alpha):
        self.world = RegistryHarness(
            config("alpha", token="alpha-token-0123456789",
                   backend=Backend("http", "tasks.alpha", 8081), **alpha),
            config("beta", token="beta-token-0123456789"))
        self.registry = self.world.registry
        self.api = AgentApi(self.registry, Identifier(self.registry, self.world.swarm),
                            RequestBudget(per_minute, self.world.clock), bus=self.world.bus,
                            clock=self.world.clock, max_body=1024)

    def call(self, test, method, path, body=None, token=ALPHA, peer="10.0.9.200",
             raw=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        return test.successResultOf(self._handle(method, path, token, data, peer))

    def _handle(self, method, path, token, data, peer):
        return Deferred.fromCoroutine(self.api.handle(
            method, path, authorization=None if token is None else [token], body=data,
            peer=peer, local="10.0.9.250"))


class RouteTests(SynchronousTestCase):
    def test_an_agent_registers_a_host_under_its_wildcard_to_its_own_tasks(self):
        harness = ApiHarness()
        reply = harness.call(self, b"POST", b"/api/services", {"host": PREVIEW, "port": 3000})
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.body, {"host": PREVIEW, "agent": "alpha",
                                      "backend": "http://tasks.alpha:3000",
                                      "registered_at": 1000.0})
        self.assertEqual(harness.registry.route(PREVIEW).target.port, 3000)
        again = harness.call(self, b"POST", b"/api/services", {"host": PREVIEW, "port": 3001})
        self.assertEqual(again.code, 200)
        listed = harness.call(self, b"GET", b"/api/services")
        self.assertEqual([item["backend"] for item in listed.body["services"]],
                         ["http://tasks.alpha:3001"])

    def test_refusals_name_the_field_and_change_nothing(self):
        harness = ApiHarness()
        for body, code, field in [
            ({"host": "preview.beta.example.com", "port": 3000}, 403, "host"),
            ({"host": "*.alpha.example.com", "port": 3000}, 422, "host"),
            ({"host": "10.0.0.1", "port": 3000}, 422, "host"),
            ({"host": PREVIEW}, 422, "port"),
            ({"host": PREVIEW, "port": 70000}, 422, "port"),
            ({"host": PREVIEW, "backend": "http://tasks.docker-proxy:2375"}, 403, "backend"),
            ({"host": PREVIEW, "port": 3000, "extra": 1}, 422, "extra"),
        ]:
            with self.subTest(body=body):
                reply = harness.call(self, b"POST", b"/api/services", body)
                self.assertEqual((reply.code, reply.body.get("field")), (code, field))
                self.assertIn("error", reply.body)
        self.assertEqual(harness.registry.registered(), ())

    def test_a_body_that_is_no_json_object_or_too_large_is_refused(self):
        harness = ApiHarness()
        for raw, code in [(b"{", 400), (b"[1]", 400), (b"\xff", 400), (None, 413),
                          (b"[" * 1000 + b"]" * 1000, 400)]:
            with self.subTest(raw=raw):
                reply = harness._handle(b"POST", b"/api/services", ALPHA, raw, "10.0.9.200")
                self.assertEqual(self.successResultOf(reply).code, code)

    def test_another_agents_route_is_not_the_callers_to_remove(self):
        harness = ApiHarness()
        harness.call(self, b"POST", b"/api/services", {"host": PREVIEW, "port": 3000})
        reply = harness.call(self, b"DELETE", b"/api/services/" + PREVIEW.encode(), token=BETA)
        self.assertEqual(reply.code, 403)
        self.assertEqual(harness.call(self, b"DELETE", b"/api/services/nope.alpha.example.com"
                                      ).code, 404)
        reply = harness.call(self, b"DELETE", b"/api/services/" + PREVIEW.upper().encode())
        self.assertEqual((reply.code, reply.body), (200, {"removed": PREVIEW}))

    def test_a_caller_without_credentials_is_told_how_to_identify(self):
        harness = ApiHarness()
        reply = harness.call(self, b"GET", b"/api/services", token=None, peer="10.0.9.201")
        self.assertEqual(reply.code, 401)
        self.assertIn((b"WWW-Authenticate", b'Bearer realm="orchestrator agents"'),
                      reply.headers)

    def test_an_agents_task_is_known_by_its_address(self):
        harness = ApiHarness()
        status = self.successResultOf(harness.world.swarm.status("alpha"))
        address = status.running_tasks[0].addresses[0].split("/")[0]
        reply = harness.call(self, b"GET", b"/api/agent", token=None, peer=address)
        self.assertEqual((reply.code, reply.body["agent"]), (200, "alpha"))

    def test_unknown_endpoints_and_methods(self):
        harness = ApiHarness()
        self.assertEqual(harness.call(self, b"GET", b"/api/nothing").code, 404)
        reply = harness.call(self, b"PUT", b"/api/services")
        self.assertEqual((reply.code, reply.headers), (405, ((b"Allow", b"GET, POST"),)))

    def test_refusals_are_told_once_per_interval_with_the_count_left_out(self):
        harness = ApiHarness()
        for _ in range(3):
            harness.call(self, b"POST", b"/api/services", {"host": "x.beta.example.com",
                                                           "port": 1})
        harness.world.clock.advance(10)
        harness.call(self, b"POST", b"/api/services", {"host": "x.beta.example.com", "port": 1})
        refused = [e for e in harness.world.bus.events if e.type == "route.refused"]
        self.assertEqual([e.fields["suppressed"] for e in refused], [0, 2])
        self.assertEqual(refused[0].fields["code"], 403)

    def test_a_caller_over_its_budget_waits(self):
        harness = ApiHarness(per_minute=2)
        codes = [harness.call(self, b"GET", b"/api/agent").code for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])


class LeaseTests(SynchronousTestCase):
    def test_an_agent_takes_renews_and_releases_its_lease(self):
        harness = ApiHarness()
        taken = harness.call(self, b"POST", b"/api/lease", {"seconds": 1800, "reason": "tool"})
        self.assertEqual(taken.code, 201)
        lease = taken.body
        self.assertEqual((lease["reason"], lease["expires"]), ("tool", 2800.0))
        renewed = harness.call(self, b"POST", b"/api/lease/" + lease["id"].encode(),
                               {"seconds": 60})
        self.assertEqual((renewed.code, renewed.body["expires"]), (200, 2800.0))
        listed = harness.call(self, b"GET", b"/api/lease")
        self.assertEqual([item["id"] for item in listed.body["leases"]], [lease["id"]])
        released = harness.call(self, b"DELETE", b"/api/lease/" + lease["id"].encode())
        self.assertEqual(released.body, {"released": lease["id"]})

    def test_another_agents_lease_is_forbidden_and_an_unknown_one_not_found(self):
        harness = ApiHarness()
        lease = harness.call(self, b"POST", b"/api/lease", {"seconds": 60}).body
        self.assertEqual(harness.call(self, b"DELETE", b"/api/lease/" + lease["id"].encode(),
                                      token=BETA).code, 403)
        self.assertEqual(harness.call(self, b"DELETE", b"/api/lease/nope").code, 404)

    def test_bad_leases_are_refused_naming_the_field(self):
        harness = ApiHarness(registration=RegistrationConfig(max_leases=1))
        for body, field in [({"seconds": 0}, "seconds"), ({"seconds": "60"}, "seconds"),
                            ({"seconds": float("inf")}, "seconds"),
                            ({"seconds": 60, "reason": "x" * 201}, "reason"),
                            ({"seconds": 60, "why": "x"}, "why")]:
            with self.subTest(body=body):
                reply = harness.call(self, b"POST", b"/api/lease", raw=json.dumps(body).encode())
                self.assertEqual((reply.code, reply.body.get("field")), (422, field))
        harness.call(self, b"POST", b"/api/lease", {"seconds": 60})
        self.assertEqual(harness.call(self, b"POST", b"/api/lease", {"seconds": 60}).code, 409)

    def test_a_sleeping_agent_takes_no_lease(self):
        harness = ApiHarness()
        self.successResultOf(harness.registry["alpha"].sleep(reason="admin"))
        self.assertIs(harness.registry["alpha"].state, AgentState.SLEEPING)
        self.assertEqual(harness.call(self, b"POST", b"/api/lease", {"seconds": 60}).code, 409)
