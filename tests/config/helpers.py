"""
Builders shared by the configuration tests: documents to parse, and a test case that
reads the problems reported for one.
"""

from __future__ import annotations

import yaml
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Config, ConsumerConfig
from orchestrator.config.readers import ConfigError
from orchestrator.config.schema import parse_config

SOURCE = "orchestrator.yaml"


def make_agent(**fields: object) -> dict[str, object]:
    """
    The YAML mapping of a valid agent, with C{fields} added or replaced.
    """
    return {
        "backend": "http://tasks.dutybound:8081",
        "hosts": ["dutybound.example.com"],
        **fields,
    }


def make_document(agents: dict[str, object] | None = None, **sections: object) -> dict:
    """
    A configuration document: one valid agent called C{dutybound} unless C{agents} is given.
    """
    if agents is None:
        agents = {"dutybound": make_agent()}
    return {**sections, "agents": agents}


def parse(document: object) -> Config:
    return parse_config(yaml.safe_dump(document, sort_keys=False), SOURCE)


class ConfigTestCase(SynchronousTestCase):
    """
    A test of what the file means: parses documents, and reads the problems reported.
    """

    def problems(self, document: object) -> list[str]:
        """
        The problems reported for C{document} (a mapping to dump, or YAML text).
        """
        text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
        return self.assertRaises(ConfigError, parse_config, text, SOURCE).problems

    def assertProblem(self, document: object, problem: str) -> None:
        """
        C{document} has exactly one problem, C{problem} (without the file name).
        """
        self.assertEqual(self.problems(document), [f"{SOURCE}: {problem}"])

    def consumers(self, *consumers: dict) -> tuple[ConsumerConfig, ...]:
        return parse(make_document(events={"consumers": list(consumers)})).events.consumers

    def secret(self, content: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as secret:
            secret.write(content)
        return path
