"""
Tests for L{orchestrator.config.readers}: the machinery every reader shares (fields,
lists, choices, key paths) and L{ConfigError}, which carries each problem twice: as an
L{Issue} for programs and as a line for people.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Policy
from orchestrator.config.readers import (
    ConfigError,
    Issue,
    Problems,
    describe,
    join_path,
    list_of,
    one_of,
    read_fields,
)
from orchestrator.config.values import positive_int


class ConfigErrorTests(SynchronousTestCase):
    """
    A L{ConfigError} holds its issues as values and as lines naming the source.
    """

    def test_lines_name_the_source_the_path_and_the_message(self) -> None:
        error = ConfigError([Issue("idle.timeout", 'expected a duration like "15m", got "soon"')],
                            "orchestrator.yaml")
        self.assertEqual(error.problems, [
            'orchestrator.yaml: idle.timeout: expected a duration like "15m", got "soon"'])

    def test_issue_of_the_whole_value_has_no_path_in_its_line(self) -> None:
        error = ConfigError([Issue("", "expected a mapping, got a list")], "orchestrator.yaml")
        self.assertEqual(error.problems, ["orchestrator.yaml: expected a mapping, got a list"])

    def test_lines_without_a_source_start_with_the_path(self) -> None:
        error = ConfigError([Issue("hosts[2]", "required")])
        self.assertEqual((error.source, error.problems), (None, ["hosts[2]: required"]))

    def test_issues_are_kept_in_order_as_given(self) -> None:
        issues = [Issue("b", "second"), Issue("a", "first")]
        self.assertEqual(ConfigError(issues, "f").issues, tuple(issues))

    def test_message_is_one_line_per_issue(self) -> None:
        error = ConfigError([Issue("a", "x"), Issue("b", "y")], "f")
        self.assertEqual(str(error), "f: a: x\nf: b: y")


class JoinPathTests(SynchronousTestCase):
    def test_keys_are_joined_with_a_dot(self) -> None:
        self.assertEqual(join_path("idle", "timeout"), "idle.timeout")

    def test_indexes_follow_their_key(self) -> None:
        self.assertEqual(join_path("hosts", "[2]"), "hosts[2]")

    def test_an_empty_part_is_the_value_itself(self) -> None:
        self.assertEqual((join_path("", "hosts[2]"), join_path("agents", "")),
                         ("hosts[2]", "agents"))


class ReadFieldsTests(SynchronousTestCase):
    """
    L{read_fields} reads every key, and raises every problem at once.
    """

    readers = {"retries": positive_int, "policy": one_of(Policy)}

    def issues(self, value: object, **kwargs) -> list[Issue]:
        return self.assertRaises(Problems, read_fields, value, self.readers, **kwargs).issues

    def test_fields_read_are_returned_by_key(self) -> None:
        self.assertEqual(read_fields({"retries": 2}, self.readers), {"retries": 2})

    def test_every_problem_is_raised_with_its_key(self) -> None:
        self.assertEqual(self.issues({"retries": 0, "policy": "sometimes", "retires": 1}), [
            Issue("retries", "expected a positive integer, got 0"),
            Issue("policy", 'expected "on_demand" or "always_on", got "sometimes"'),
            Issue("retires", 'unknown key, did you mean "retries"?'),
        ])

    def test_required_keys_left_out_are_problems(self) -> None:
        self.assertEqual(self.issues({}, required=("policy",)), [Issue("policy", "required")])

    def test_a_value_that_is_not_a_mapping_is_a_value_error(self) -> None:
        error = self.assertRaises(ValueError, read_fields, [1], self.readers)
        self.assertEqual(str(error), "expected a mapping, got a list")

    def test_problems_inside_a_field_get_its_key_in_front(self) -> None:
        readers = {"inner": lambda value: read_fields(value, self.readers)}
        issues = self.assertRaises(Problems, read_fields, {"inner": {"retries": -1}},
                                   readers).issues
        self.assertEqual(issues, [Issue("inner.retries", "expected a positive integer, got -1")])


class ListOfTests(SynchronousTestCase):
    def test_items_are_read_into_a_tuple(self) -> None:
        self.assertEqual(list_of(positive_int)([1, 2]), (1, 2))

    def test_bad_items_are_reported_by_index(self) -> None:
        issues = self.assertRaises(Problems, list_of(positive_int), [1, 0, "x"]).issues
        self.assertEqual([issue.path for issue in issues], ["[1]", "[2]"])

    def test_a_tuple_is_not_a_list(self) -> None:
        # YAML and JSON give lists; anything else is a mistake to report.
        self.assertRaises(ValueError, list_of(positive_int), (1, 2))


class DescribeTests(SynchronousTestCase):
    def test_scalars_as_yaml_spells_them(self) -> None:
        self.assertEqual([describe(v) for v in ("soon", 5, 1.5, True, None)],
                         ['"soon"', "5", "1.5", "true", "null"])

    def test_collections_by_their_kind(self) -> None:
        self.assertEqual([describe({}), describe([]), describe(())],
                         ["a mapping", "a list", "a tuple"])

    def test_not_a_number(self) -> None:
        self.assertEqual(describe(math.nan), "NaN")

    @given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none(),
                     st.lists(st.integers()), st.dictionaries(st.text(), st.integers())))
    def test_every_value_is_described_on_one_line(self, value: object) -> None:
        self.assertNotIn("\n", describe(value))
