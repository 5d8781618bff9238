"""
twistd plugin: C{twistd orchestrator --config FILE}. Options and wiring only; the
orchestrator package is imported when the plugin runs, so C{twistd --help} stays fast.
"""

import sys

from twisted.application.service import ServiceMaker
from twisted.python import usage


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "The orchestrator's YAML configuration file."],
    ]

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        from orchestrator.config.readers import ConfigError
        from orchestrator.config.schema import load_config

        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as error:
            # Every problem on its own line, no traceback, non-zero exit.
            for problem in error.problems:
                sys.stderr.write(problem + "\n")
            raise SystemExit(2) from None


def makeService(options):
    from orchestrator import service

    return service.makeService(options["loaded"])


orchestrator = ServiceMaker(
    "orchestrator",
    "twisted.plugins.orchestrator_plugin",
    "Wake-on-request reverse proxy and WebSocket relay for agents on Docker Swarm.",
    "orchestrator",
)
