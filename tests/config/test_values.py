"""
Readers of single values: durations, sizes, backend addresses, names.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.values import (
    admin_token,
    agent_name,
    backend_address,
    backend_host,
    backend_scheme,
    byte_size,
    parse_duration,
    port_number,
)

SECONDS_PER_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


class DurationTests(SynchronousTestCase):
    """
    Durations are numbers of seconds, or a number with a unit: ms, s, m or h.
    """

    def test_units(self) -> None:
        self.assertEqual(
            [parse_duration(text) for text in ("500ms", "30s", "15m", "1h")],
            [0.5, 30.0, 900.0, 3600.0],
        )

    def test_plain_numbers_are_seconds(self) -> None:
        self.assertEqual([parse_duration(v) for v in (3, 2.5, "7", "0.25")], [3.0, 2.5, 7.0, 0.25])

    def test_fractions_with_units(self) -> None:
        self.assertEqual(parse_duration("1.5m"), 90.0)

    def test_zero_is_a_duration(self) -> None:
        self.assertEqual(parse_duration("0s"), 0.0)

    def test_negative_is_an_error(self) -> None:
        error = self.assertRaises(ValueError, parse_duration, "-5s")
        self.assertEqual(str(error), 'expected a duration of 0 or more, got "-5s"')

    def test_infinity_is_an_error(self) -> None:
        error = self.assertRaises(ValueError, parse_duration, "inf")
        self.assertEqual(str(error), 'expected a finite duration, got "inf"')

    def test_not_a_number_is_an_error(self) -> None:
        error = self.assertRaises(ValueError, parse_duration, math.nan)
        self.assertEqual(str(error), "expected a finite duration, got NaN")

    def test_unknown_unit_is_an_error(self) -> None:
        error = self.assertRaises(ValueError, parse_duration, "2d")
        self.assertEqual(str(error), 'expected a duration like "15m", got "2d"')

    def test_boolean_is_an_error(self) -> None:
        self.assertRaises(ValueError, parse_duration, True)


class DurationPropertyTests(SynchronousTestCase):
    @given(
        st.sampled_from(sorted(SECONDS_PER_UNIT)),
        st.one_of(
            st.integers(min_value=0, max_value=10**9),
            st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
        ),
    )
    def test_number_with_unit_round_trips(self, unit: str, number: float) -> None:
        seconds = parse_duration(f"{number}{unit}")
        self.assertTrue(math.isclose(seconds, number * SECONDS_PER_UNIT[unit], rel_tol=1e-12))

    @given(
        st.one_of(
            st.integers(min_value=0, max_value=10**15),
            st.floats(min_value=0, allow_nan=False, allow_infinity=False),
        )
    )
    def test_non_negative_numbers_are_seconds(self, number: float) -> None:
        self.assertEqual(parse_duration(number), float(number))

    @given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none()))
    def test_garbage_raises_only_value_error(self, value: object) -> None:
        try:
            seconds = parse_duration(value)
        except ValueError:
            return
        self.assertTrue(math.isfinite(seconds) and seconds >= 0)


class BackendAddressTests(SynchronousTestCase):
    """
    A backend URL is read into the scheme, host and port a L{Backend} holds.
    """

    def test_the_port_defaults_by_scheme(self) -> None:
        self.assertEqual([backend_address("http://tasks.x"), backend_address("https://tasks.x/")],
                         [("http", "tasks.x", 80), ("https", "tasks.x", 443)])

    def test_an_ipv6_host_loses_its_brackets(self) -> None:
        self.assertEqual(backend_address("http://[::1]:8081"), ("http", "::1", 8081))

    def test_the_host_is_lower_cased(self) -> None:
        self.assertEqual(backend_address("http://Tasks.X:1"), ("http", "tasks.x", 1))

    def test_the_parts_follow_the_rules_of_the_url(self) -> None:
        self.assertEqual((backend_scheme("https"), backend_host("::1"), port_number(65535)),
                         ("https", "::1", 65535))
        for read, value in ((backend_scheme, "ftp"), (backend_host, "tasks.a_b"),
                            (backend_host, ""), (port_number, 0), (port_number, True)):
            self.assertRaises(ValueError, read, value)


class NameTests(SynchronousTestCase):
    def test_agent_names_are_lower_case_with_digits_hyphens_and_underscores(self) -> None:
        self.assertEqual(agent_name("agent_2-b"), "agent_2-b")
        for name in ("Agent", "-agent", "a" * 64, "", 5, None):
            self.assertRaises(ValueError, agent_name, name)

    def test_an_admin_token_has_16_characters_or_more_and_is_never_shown(self) -> None:
        self.assertEqual(admin_token("0123456789abcdef"), "0123456789abcdef")
        error = self.assertRaises(ValueError, admin_token, "hunter2")
        self.assertNotIn("hunter2", str(error))


class SizePropertyTests(SynchronousTestCase):
    """
    Sizes are whole numbers of bytes greater than 0, or such a number of KiB or MiB.
    """

    @given(st.integers(min_value=1, max_value=2**40))
    def test_whole_numbers_are_bytes(self, size: int) -> None:
        self.assertEqual(byte_size(size), size)

    @given(st.integers(min_value=1, max_value=2**20),
           st.sampled_from([("B", 1), ("KiB", 1024), ("mib", 1024 * 1024)]), st.booleans())
    def test_numbers_with_a_unit(self, number: int, unit: tuple[str, int],
                                 space: bool) -> None:
        name, factor = unit
        self.assertEqual(byte_size(f"{number}{' ' if space else ''}{name}"), number * factor)

    @given(st.one_of(st.text(), st.integers(max_value=2**40), st.floats(), st.booleans(),
                     st.none()))
    def test_garbage_raises_only_value_error_and_sizes_are_positive(self, value) -> None:
        try:
            size = byte_size(value)
        except ValueError:
            return
        self.assertTrue(isinstance(size, int) and size >= 1)
