"""
Agents against one fake Swarm, one clock, one bus and a running watcher: the world in
which the tests of the agents' reactions to Swarm (and of the watcher) run.
"""

from __future__ import annotations

import attrs
from twisted.internet.testing import MemoryReactorClock

from orchestrator.agents.capacity import Capacity
from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.config.model import LimitsConfig, Policy
from orchestrator.swarm.memory import FakeSwarm
from orchestrator.swarm.watcher import SwarmWatcher
from tests.helpers import RecordingBus, ScriptedProber, agent_config


class CountingSwarm(FakeSwarm):
    """
    A fake Swarm that counts the status reads of each service.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reads: dict[str, int] = {}

    def status(self, service):
        self.reads[service] = self.reads.get(service, 0) + 1
        return super().status(service)


@attrs.define
class World:
    """
    Agents against one fake Swarm, one clock, one bus, and a running watcher.
    """

    swarm: FakeSwarm
    clock: MemoryReactorClock
    bus: RecordingBus
    prober: ScriptedProber
    agents: AgentRegistry
    watcher: SwarmWatcher

    def agent(self, name: str = "alpha") -> Agent:
        return self.agents[name]

    def settle(self) -> None:
        """
        Let the watcher hand over what the fake Swarm said (it waits for the end of the
        reactor turn).
        """
        self.clock.advance(0)

    def transitions(self, name: str = "alpha") -> list[tuple[str, str, str]]:
        return [(event.type, event.fields["previous"], event.fields["state"])
                for event in self.bus.events
                if event.agent == name and "previous" in event.fields]


def make_world(*agents: tuple[str, dict], swarm: FakeSwarm | None = None,
               watch: bool = True, healthy: bool = True,
               limits: LimitsConfig | None = None) -> World:
    """
    A running watcher over agents made from C{(name, config changes)}, each with a
    service of its own (C{replicas} and the other C{add_service} arguments are taken
    from the changes), reconciled; under the host's budget C{limits}, if given.
    """
    clock = MemoryReactorClock()
    clock.advance(1000)
    swarm = swarm if swarm is not None else FakeSwarm()
    bus = RecordingBus(clock)
    prober = ScriptedProber(healthy)
    configs = []
    for name, changes in agents or (("alpha", {}),):
        changes = dict(changes)
        service_arguments = {key: changes.pop(key) for key in
                             ("replicas", "max_attempts", "restart_condition", "exits_at_once")
                             if key in changes}
        service_arguments.setdefault("replicas", 0)
        config = agent_config(name, **changes)
        swarm.add_service(config.service, **service_arguments)
        configs.append(config)
    capacity = None
    if limits is not None:
        capacity = Capacity(limits, clock=clock, bus=bus, swarm=swarm)
        capacity.startService()
    registry = AgentRegistry(
        lambda config: Agent(config, swarm=swarm, prober=prober, bus=bus, reactor=clock,
                             capacity=capacity), capacity=capacity)
    watcher = SwarmWatcher(swarm, registry, bus=bus, clock=clock)
    for agent in registry.load(configs):
        agent.start()
    if watch:
        watcher.startService()
    world = World(swarm, clock, bus, prober, registry, watcher)
    world.settle()
    return world


ALWAYS_ON = {"policy": Policy.ALWAYS_ON, "replicas": 1}
