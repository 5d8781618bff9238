"""
Tests for L{orchestrator.config.document}: the file's text read as YAML, strictly.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.document import load_document
from orchestrator.config.readers import ConfigError, Issue
from orchestrator.config.schema import parse_config

from .helpers import SOURCE, ConfigTestCase


class LoadDocumentTests(SynchronousTestCase):
    def test_the_document_is_plain_data(self) -> None:
        self.assertEqual(load_document("agents: {a: {hosts: [x]}}\n", SOURCE),
                         {"agents": {"a": {"hosts": ["x"]}}})

    def test_an_empty_text_is_no_document(self) -> None:
        self.assertIsNone(load_document("", SOURCE))

    def test_a_mistake_is_an_issue_of_the_whole_text(self) -> None:
        error = self.assertRaises(ConfigError, load_document, "a: [\n", SOURCE)
        self.assertEqual((error.source, [issue.path for issue in error.issues]), (SOURCE, [""]))
        self.assertIsInstance(error.issues[0], Issue)


class YamlTests(ConfigTestCase):
    """
    Text that is not YAML is reported with its line and column.
    """

    def test_invalid_yaml_names_line_and_column(self) -> None:
        self.assertProblem(
            "agents:\n  dutybound: backend: x\n",
            "line 2, column 21: invalid YAML: mapping values are not allowed here",
        )

    def test_key_given_twice_is_an_error(self) -> None:
        text = "agents:\n  dutybound: {}\n  dutybound: {}\n"
        self.assertProblem(
            text, 'line 3, column 3: invalid YAML: found a duplicate key "dutybound"'
        )

    def test_merge_keys_may_override_merged_ones(self) -> None:
        text = (
            "agents:\n"
            "  dutybound: &base\n"
            "    backend: http://tasks.dutybound:8081\n"
            "    hosts: [dutybound.example.com]\n"
            "  other:\n"
            "    <<: *base\n"
            "    hosts: [other.example.com]\n"
        )
        config = parse_config(text, SOURCE)
        self.assertEqual(config.agent("other").hosts, ("other.example.com",))

    def test_python_tags_are_refused(self) -> None:
        problems = self.problems("agents: !!python/object:object {}\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith(f"{SOURCE}: line 1, column 9: invalid YAML: "))
