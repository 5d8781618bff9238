"""
An orchestrator running in-process on the real reactor, in front of the real Swarm, for
integration tests.
"""

from __future__ import annotations

import attrs
from twisted.internet import reactor
from zope.interface import implementer

from orchestrator.config.model import AgentConfig, Backend, Config, IdleConfig, ListenConfig
from orchestrator.service import OrchestratorService
from orchestrator.swarm.docker import DockerSwarm
from orchestrator.swarm.values import ISwarm

from . import engine


@implementer(ISwarm)
class CountingSwarm:
    """
    The real L{DockerSwarm}, with every scale call the orchestrator makes recorded.
    """

    def __init__(self, real: DockerSwarm) -> None:
        self.real = real
        self.scale_calls: list[tuple[str, int]] = []

    def status(self, service):
        return self.real.status(service)

    def scale(self, service, replicas):
        self.scale_calls.append((service, replicas))
        return self.real.scale(service, replicas)

    def discover(self, label):
        return self.real.discover(label)

    def __getattr__(self, name):
        # Service lifecycle (startService, setServiceParent, ...) goes to the real one.
        return getattr(self.real, name)


@attrs.frozen
class RunningOrchestrator:
    service: OrchestratorService
    swarm: CountingSwarm
    proxy_url: str
    admin_url: str

    def agent(self, name: str):
        return self.service.agents[name]


def agent_config(name: str, service: str, port: int, **changes) -> AgentConfig:
    """
    An on-demand agent for a test service published on 127.0.0.1:C{port}.
    """
    return attrs.evolve(
        AgentConfig(
            name=name,
            service=service,
            backend=Backend("http", "127.0.0.1", port),
            hosts=(f"{name}.localhost",),
            startup_timeout=60,
            idle=IdleConfig(timeout=3, drain_timeout=1),
        ),
        **changes,
    )


def start_orchestrator(test, *agents: AgentConfig, metrics_port: int | None = None,
                       **sections) -> RunningOrchestrator:
    """
    Start an orchestrator for C{agents} on free loopback ports; C{test} stops it.
    C{sections} replace the configuration's (C{admin=AdminConfig(token=...)}, ...);
    C{metrics_port} opens the metrics listener there.
    """
    proxy_port, admin_port = engine.free_port(), engine.free_port()
    config = Config(
        source="<integration test>",
        agents=agents,
        listen=ListenConfig(
            proxy=f"tcp:{proxy_port}:interface=127.0.0.1",
            admin=f"tcp:{admin_port}:interface=127.0.0.1",
            metrics=None if metrics_port is None else f"tcp:{metrics_port}:interface=127.0.0.1",
        ),
        **sections,
    )
    swarm = CountingSwarm(DockerSwarm(engine.engine_url(), reactor))
    service = OrchestratorService(config, swarm=swarm, reactor=reactor)
    service.startService()
    test.addCleanup(service.stopService)
    return RunningOrchestrator(service, swarm, f"http://127.0.0.1:{proxy_port}",
                               f"http://127.0.0.1:{admin_port}")
