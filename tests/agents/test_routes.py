"""
Host routing: exact names, the longest *.suffix wildcard, ownership of dynamic routes.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.routes import HostConflict, RouteTable, normalize_host

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=2, max_size=5).map(".".join)


def table(**routes):
    routes_table = RouteTable()
    for target, patterns in routes.items():
        for pattern in patterns:
            routes_table.add(pattern, target, owner=target)
    return routes_table


class RouteTableTests(SynchronousTestCase):
    def test_exact_host_matches(self):
        self.assertEqual(table(a=["a.example.com"]).match("a.example.com"), "a")

    def test_unknown_host_matches_nothing(self):
        self.assertIsNone(table(a=["a.example.com"]).match("b.example.com"))

    def test_match_ignores_case_and_port(self):
        self.assertEqual(table(a=["a.example.com"]).match("A.Example.COM:8080"), "a")

    def test_wildcard_matches_subdomains_at_any_depth(self):
        routes = table(a=["*.example.com"])
        self.assertEqual(routes.match("x.example.com"), "a")
        self.assertEqual(routes.match("x.y.example.com"), "a")

    def test_wildcard_does_not_match_its_own_apex(self):
        self.assertIsNone(table(a=["*.example.com"]).match("example.com"))

    def test_exact_wins_over_wildcard(self):
        routes = table(a=["*.example.com"], b=["b.example.com"])
        self.assertEqual(routes.match("b.example.com"), "b")

    def test_longest_wildcard_wins(self):
        routes = table(a=["*.example.com"], b=["*.b.example.com"])
        self.assertEqual(routes.match("x.b.example.com"), "b")
        self.assertEqual(routes.match("x.c.example.com"), "a")

    def test_another_owner_cannot_take_a_host(self):
        routes = table(a=["a.example.com"])
        error = self.assertRaises(HostConflict, routes.add, "A.example.com", "b", owner="b")
        self.assertEqual(error.owner, "a")

    def test_remove_owner_drops_only_its_routes(self):
        routes = table(a=["a.example.com", "*.a.example.com"], b=["b.example.com"])
        dropped = routes.remove_owner("a")
        self.assertEqual(sorted(dropped), ["*.a.example.com", "a.example.com"])
        self.assertIsNone(routes.match("x.a.example.com"))
        self.assertEqual(routes.match("b.example.com"), "b")

    def test_ipv6_literal_keeps_its_brackets(self):
        self.assertEqual(normalize_host("[::1]:8080"), "[::1]")

    @given(hostnames, st.integers(1, 65535))
    def test_any_host_routes_regardless_of_case_and_port(self, host, port):
        routes = table(a=[host])
        self.assertEqual(routes.match(f"{host.upper()}:{port}"), "a")

    @given(hostnames, st.lists(labels, min_size=1, max_size=3))
    def test_wildcard_matches_every_subdomain(self, domain, prefix):
        routes = table(a=["*." + domain])
        self.assertEqual(routes.match(".".join(prefix) + "." + domain), "a")

    @given(hostnames, hostnames)
    def test_wildcard_never_matches_outside_its_domain(self, domain, other):
        routes = table(a=["*." + domain])
        if not (other == domain or other.endswith("." + domain)):
            self.assertIsNone(routes.match(other))
