"""
An admin app over agents in a fake world (one fake Swarm, one clock, one bus), and a
treq client for it in memory: the arrange part of the admin tests.
"""

from __future__ import annotations

import attrs
from treq.testing import StubTreq

from orchestrator.admin.app import AdminApp
from orchestrator.admin.stream import EventBuffer, EventStream
from orchestrator.config.model import AdminConfig, Config
from orchestrator.metrics.hub import Metrics
from orchestrator.proxy.holding import HoldCounter
from tests.agents.world import World, make_world

TOKEN = "s3cret-admin-token-0123"


@attrs.define
class AdminWorld:
    world: World
    app: AdminApp
    client: StubTreq
    buffer: EventBuffer
    stream: EventStream
    config: Config

    @property
    def clock(self):
        return self.world.clock


def make_admin(*agents, token: str | None = None, swarm=None, admin: AdminConfig | None = None,
               buffer_size: int = 100) -> AdminWorld:
    world = make_world(*agents, swarm=swarm)
    admin = admin or AdminConfig(token=token)
    config = Config(source="test.yaml",
                    agents=tuple(agent.config for agent in world.agents.values()),
                    admin=admin)
    buffer = EventBuffer("b00t", buffer_size)
    world.bus.subscribe(buffer)
    stream = EventStream(buffer, clock=world.clock, max_subscribers=admin.max_event_subscribers,
                         queue_size=admin.subscriber_queue, heartbeat=admin.event_heartbeat)
    metrics = Metrics(world.agents, world.bus, swarm=world.swarm)
    app = AdminApp(world.agents, clock=world.clock, token=admin.token,
                   running_config=lambda: config, stream=stream, metrics=metrics.registry,
                   holds=HoldCounter(10), max_wait=admin.max_wait)
    return AdminWorld(world, app, StubTreq(app.resource()), buffer, stream, config)
