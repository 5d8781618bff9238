"""
The file's text as a YAML document: safe YAML only, a key given twice in a mapping
refused, and a mistake reported with its line and column.
"""

from __future__ import annotations

from typing import Any

import yaml

from orchestrator.config.readers import ConfigError, Issue, describe


def load_document(text: str, source: str) -> object:
    """
    The YAML document C{text} as plain data (mappings, lists, scalars); C{source} names
    where it came from, for messages.

    @raise ConfigError: if it is not YAML, or a mapping gives a key twice, with the line
        and the column of the problem.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        where = ""
        if e.problem_mark is not None:
            where = f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}: "
        raise ConfigError([Issue("", f"{where}invalid YAML: {e.problem}")], source) from None
    except yaml.YAMLError as e:
        raise ConfigError([Issue("", f"invalid YAML: {e}")], source) from None


class _StrictLoader(yaml.SafeLoader):
    """
    A C{SafeLoader} that refuses a key given twice in one mapping. PyYAML would keep the
    last one silently, so a second C{agents.dutybound} would replace the first unnoticed.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            # Merge keys ("<<") may repeat, and only scalar keys are surely hashable.
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found a duplicate key {describe(key)}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
