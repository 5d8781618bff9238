"""
What an agent may register: hosts under its own wildcards that no one else serves,
routed to its own tasks or to the services the operator allowed.
"""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Backend, RegistrationConfig
from orchestrator.policy.registration import Refused, check_host, falls_under, route_backend
from tests.helpers import agent_config

AGENT = agent_config("dutybound", hosts=("dutybound.example.com", "*.dutybound.example.com"),
                     backend=Backend("http", "tasks.dutybound", 8081))


def refusal(function, *args, **kwargs) -> Refused:
    try:
        function(*args, **kwargs)
    except Refused as refused:
        return refused
    raise AssertionError("not refused")


class HostTests(SynchronousTestCase):
    def check(self, host, served_by="dutybound", configured=False, held=()):
        return check_host(AGENT, host, served_by=served_by, configured=configured, held=held)

    def test_a_host_under_the_agents_wildcard_that_routes_to_it_is_allowed(self):
        self.assertIsNone(self.check("preview-42.dutybound.example.com"))

    def test_a_host_under_none_of_its_wildcards_is_not_its_to_register(self):
        refused = refusal(self.check, "preview.other.example.com", served_by="other")
        self.assertEqual((refused.code, refused.field), (403, "host"))
        self.assertEqual(refusal(self.check, "dutybound.example.com").code, 403)

    def test_a_host_another_agent_serves_through_a_closer_wildcard_is_taken(self):
        refused = refusal(self.check, "x.team.dutybound.example.com", served_by="tenant-b")
        self.assertEqual(refused.code, 409)
        self.assertNotIn("tenant-b", refused.reason)  # another tenant is not named

    def test_an_exact_host_of_the_configuration_is_taken(self):
        self.assertEqual(refusal(self.check, "app.dutybound.example.com",
                                 configured=True).code, 409)

    def test_the_route_limit_counts_new_hosts_only(self):
        agent = attrs.evolve(AGENT, registration=RegistrationConfig(max_routes=1))
        held = ("a.dutybound.example.com",)
        self.assertIsNone(check_host(agent, held[0], served_by="dutybound", configured=False,
                                     held=held))
        refused = refusal(check_host, agent, "b.dutybound.example.com",
                          served_by="dutybound", configured=False, held=held)
        self.assertEqual(refused.code, 409)
        self.assertIn("1 routes, the most allowed", refused.reason)

    @given(st.from_regex(r"[a-z0-9.*-]{1,40}", fullmatch=True), st.booleans(),
           st.sampled_from([None, "dutybound", "other"]))
    def test_whatever_is_allowed_falls_under_a_wildcard_and_is_no_one_elses(
            self, host, configured, served_by):
        try:
            check_host(AGENT, host, served_by=served_by, configured=configured, held=())
        except Refused:
            return
        self.assertTrue(any(falls_under(host, pattern) for pattern in AGENT.hosts))
        self.assertFalse(configured)
        self.assertIn(served_by, (None, "dutybound"))


class BackendTests(SynchronousTestCase):
    def test_a_port_means_the_agents_own_tasks(self):
        self.assertEqual(route_backend(AGENT, port=3000),
                         Backend("http", "tasks.dutybound", 3000))

    def test_exactly_one_of_port_and_backend(self):
        self.assertEqual(refusal(route_backend, AGENT).code, 422)
        self.assertEqual(refusal(route_backend, AGENT, port=1, backend="http://x:1").code, 422)

    def test_a_port_must_be_a_port(self):
        for port in (0, 65536, "3000", True, 3.5):
            with self.subTest(port=port):
                refused = refusal(route_backend, AGENT, port=port)
                self.assertEqual((refused.code, refused.field), (422, "port"))

    def test_another_service_only_where_the_configuration_allows_it(self):
        self.assertEqual(refusal(route_backend, AGENT, backend="http://tasks.preview:3000").code,
                         403)
        allowed = attrs.evolve(AGENT, registration=RegistrationConfig(
            backends=("tasks.dutybound-preview-*",)))
        self.assertEqual(route_backend(allowed, backend="http://tasks.dutybound-preview-7:3000"),
                         Backend("http", "tasks.dutybound-preview-7", 3000))
        for other in ("http://tasks.socket-proxy:2375", "http://orchestrator:9090",
                      "http://tasks.other-agent:8081"):
            with self.subTest(backend=other):
                self.assertEqual(refusal(route_backend, allowed, backend=other).code, 403)

    def test_an_address_is_never_a_backend(self):
        allowed = attrs.evolve(AGENT, registration=RegistrationConfig(backends=("*",)))
        for address in ("http://10.0.0.1:80", "http://127.0.0.1:9090", "http://[::1]:80",
                        "http://169.254.169.254/"):
            with self.subTest(backend=address):
                refused = refusal(route_backend, allowed, backend=address)
                self.assertEqual((refused.code, refused.field), (403, "backend"))

    def test_a_malformed_backend_says_why(self):
        allowed = attrs.evolve(AGENT, registration=RegistrationConfig(backends=("*",)))
        for bad in ("ftp://tasks.x:21", "http://user@tasks.x:80", "tasks.x:80", 42,
                    "http://tasks.x:80/path"):
            with self.subTest(backend=bad):
                refused = refusal(route_backend, allowed, backend=bad)
                self.assertEqual((refused.code, refused.field), (422, "backend"))
