"""
Host names and origins: the hosts that route to an agent, the hosts an agent registers
at run time, and WebSocket origins.
"""

from __future__ import annotations

import ipaddress

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.hosts import ip_address, parse_host, parse_origin, parse_registered_host


class HostTests(SynchronousTestCase):
    """
    Hosts are DNS names, C{*.} wildcards over at least two labels, or IP addresses.
    """

    def test_hosts_are_lower_cased(self) -> None:
        self.assertEqual(parse_host("Dutybound.Example.COM"), "dutybound.example.com")

    def test_wildcard_over_two_labels(self) -> None:
        self.assertEqual(parse_host("*.Example.com"), "*.example.com")

    def test_wildcard_over_one_label_is_an_error(self) -> None:
        error = self.assertRaises(ValueError, parse_host, "*.com")
        self.assertEqual(
            str(error),
            'expected a host name like "agent.example.com", got "*.com" '
            '(a wildcard needs at least two labels after "*.")',
        )

    def test_bare_star_is_an_error(self) -> None:
        self.assertRaises(ValueError, parse_host, "*")

    def test_star_inside_a_name_is_an_error(self) -> None:
        for host in ("a.*.example.com", "a*.example.com", "*.*.example.com"):
            self.assertRaises(ValueError, parse_host, host)

    def test_port_is_an_error(self) -> None:
        error = self.assertRaises(ValueError, parse_host, "dutybound.example.com:8080")
        self.assertIn("a port is not allowed", str(error))

    def test_port_after_an_ipv6_address_is_an_error(self) -> None:
        self.assertRaises(ValueError, parse_host, "[::1]:8080")

    def test_ipv4_address(self) -> None:
        self.assertEqual(parse_host("192.0.2.7"), "192.0.2.7")

    def test_ipv6_address_is_bracketed_and_compressed(self) -> None:
        self.assertEqual(
            [parse_host("2001:DB8:0:0::1"), parse_host("[2001:db8::1]")],
            ["[2001:db8::1]", "[2001:db8::1]"],
        )

    def test_numeric_name_that_is_no_address_is_an_error(self) -> None:
        self.assertRaises(ValueError, parse_host, "256.1.1.1")

    def test_label_must_not_start_or_end_with_a_hyphen(self) -> None:
        for host in ("-a.example.com", "a-.example.com"):
            self.assertRaises(ValueError, parse_host, host)

    def test_label_longer_than_63_is_an_error(self) -> None:
        self.assertRaises(ValueError, parse_host, "a" * 64 + ".example.com")

    def test_name_longer_than_253_is_an_error(self) -> None:
        self.assertRaises(ValueError, parse_host, ".".join(["a" * 63] * 4))

    def test_empty_label_is_an_error(self) -> None:
        for host in ("", "example..com", "example.com."):
            self.assertRaises(ValueError, parse_host, host)


labels = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", fullmatch=True)


names = (
    st.lists(labels, min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda name: not name.split(".")[-1].isdigit())
)


class HostPropertyTests(SynchronousTestCase):
    @given(names)
    def test_valid_names_are_accepted_lower_cased(self, name: str) -> None:
        self.assertEqual(parse_host(name), name.lower())

    @given(names)
    def test_wildcards_over_two_labels_or_more_are_accepted(self, name: str) -> None:
        assume("." in name)
        self.assertEqual(parse_host("*." + name), "*." + name.lower())

    @given(names, st.integers(min_value=0, max_value=65535))
    def test_names_with_a_port_are_refused(self, name: str, port: int) -> None:
        self.assertRaises(ValueError, parse_host, f"{name}:{port}")

    @given(st.ip_addresses())
    def test_ip_addresses_are_accepted(self, address: ipaddress._BaseAddress) -> None:
        expected = f"[{address}]" if address.version == 6 else str(address)
        self.assertEqual(parse_host(str(address)), expected)

    @given(st.text())
    def test_garbage_raises_only_value_error_and_accepted_hosts_are_stable(
        self, text: str
    ) -> None:
        try:
            host = parse_host(text)
        except ValueError:
            return
        self.assertEqual(parse_host(host), host)


class OriginPropertyTests(SynchronousTestCase):
    """
    Origins are read into the form browsers send in C{Origin}.
    """

    @given(st.sampled_from(["http", "https", "HTTPS"]), names,
           st.one_of(st.none(), st.integers(min_value=1, max_value=65535)))
    def test_origins_are_lower_cased_without_their_default_port(
        self, scheme: str, name: str, port: int | None
    ) -> None:
        text = f"{scheme}://{name}" if port is None else f"{scheme}://{name}:{port}"
        default = {"http": 80, "https": 443}[scheme.lower()]
        expected = f"{scheme.lower()}://{name.lower()}"
        if port not in (None, default):
            expected += f":{port}"
        self.assertEqual(parse_origin(text), expected)

    @given(st.text())
    def test_garbage_raises_only_value_error_and_accepted_origins_are_stable(
        self, text: str
    ) -> None:
        try:
            origin = parse_origin(text)
        except ValueError:
            return
        self.assertEqual(parse_origin(origin), origin)

    @given(st.sampled_from(["http", "https"]), names, st.integers(min_value=65536))
    def test_ports_out_of_range_are_refused(self, scheme: str, name: str, port: int) -> None:
        self.assertRaises(ValueError, parse_origin, f"{scheme}://{name}:{port}")


class RegisteredHostTests(SynchronousTestCase):
    """
    A host an agent registers is one DNS name: no wildcard, address or port.
    """

    def test_a_name_is_lower_cased_without_its_trailing_dot(self) -> None:
        self.assertEqual(parse_registered_host("Preview-42.Dutybound.Example.COM."),
                         "preview-42.dutybound.example.com")

    def test_an_internationalised_name_is_taken_in_its_idna_form(self) -> None:
        self.assertEqual(parse_registered_host("bücher.dutybound.example.com"),
                         "xn--bcher-kva.dutybound.example.com")

    def test_refusals_say_why(self) -> None:
        for value, reason in [
            ("*.dutybound.example.com", "not a wildcard"),
            ("*", "not a wildcard"),
            ("10.0.0.7", "an IP address"),
            ("[::1]", "an IP address"),
            ("fe80::1", "an IP address"),
            ("preview.example.com:8080", "a port is not allowed"),
            ("localhost", "a single label"),
            ("a..example.com", "not a valid label"),
            ("-a.example.com", "not a valid label"),
            ("a_b.example.com", "not a valid label"),
            ("a" * 64 + ".example.com", "not a valid label"),
            (("a" * 60 + ".") * 5 + "com", "longer than 253"),
            ("xn--.example.com", "not a valid internationalised name"),
            ("\u00df\u200d.example.com", "not a valid internationalised name"),
            ("", "got"),
            (42, "got 42"),
        ]:
            with self.subTest(value=value):
                error = self.assertRaises(ValueError, parse_registered_host, value)
                self.assertIn(reason, str(error))

    @given(st.text(max_size=80))
    def test_whatever_it_accepts_routes_as_a_configured_exact_host(self, value) -> None:
        try:
            host = parse_registered_host(value)
        except ValueError:
            return
        self.assertEqual(parse_host(host), host)
        self.assertTrue(host.isascii() and host == host.lower())
        self.assertNotIn("*", host)
        self.assertIsNone(ip_address(host))
        self.assertEqual(parse_registered_host(host), host)

    @given(names)
    def test_every_valid_name_is_accepted(self, name) -> None:
        assume("." in name and not name.rsplit(".", 1)[1].isdigit())
        self.assertEqual(parse_registered_host(name), name.lower())
