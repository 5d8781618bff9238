"""
makeService: the MultiService tree built from a Config, and its phased shutdown.

Stopping runs in sequence (twisted's MultiService would stop children concurrently and
leave open connections alone): stop accepting, drain HTTP and relayed connections within
C{shutdown.drain_timeout}, stop watching Swarm's events and the agents' timers (never
scaling anything), then stop the workers (the Docker thread pool) and the event consumers.
"""

from __future__ import annotations

import os
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.server import Site

from orchestrator.admin import AdminResource
from orchestrator.agent import Agent
from orchestrator.config import Config
from orchestrator.consumers import make_consumer
from orchestrator.events import EventBus, FilteredConsumer, JsonLinesConsumer
from orchestrator.frontdoor import FrontDoorSite
from orchestrator.probe import HttpProber
from orchestrator.proxy import ProxyResource
from orchestrator.routes import RouteTable
from orchestrator.swarm import DockerSwarm
from orchestrator.watcher import SwarmWatcher

log = Logger()


class OrchestratorService(MultiService):
    """
    The root service. C{agents} maps names to L{Agent}; C{routes} is the live host table.
    """

    def __init__(self, config: Config, *, swarm, reactor, prober=None,
                 http=None) -> None:
        """
        @param http: the HTTP client of the event consumers (treq's C{post}); by default
            each makes its own on C{reactor}.
        """
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.swarm = swarm
        self.bus = EventBus(reactor)
        self.prober = prober if prober is not None else HttpProber(reactor)
        self.routes: RouteTable[Agent] = RouteTable()
        self.agents: dict[str, Agent] = {}
        wake_slots = DeferredSemaphore(config.proxy.max_concurrent_wakes)
        for agent_config in config.agents:
            agent = Agent(agent_config, swarm=swarm, prober=self.prober, bus=self.bus,
                          reactor=reactor, wake_slots=wake_slots)
            self.agents[agent.name] = agent
            for host in agent_config.hosts:
                self.routes.add(host, agent, owner=agent.name)
        # Swarm's events nudge the agents; started once they have reconciled.
        self.watcher = SwarmWatcher(swarm, self.agents.values(), bus=self.bus, clock=reactor)
        # Subscribed now, so the events of the start are queued until they run.
        self.consumers = [make_consumer(consumer, reactor=reactor, http=http)
                          for consumer in config.events.consumers]
        for consumer, consumer_config in zip(self.consumers, config.events.consumers,
                                             strict=True):
            self.bus.subscribe(FilteredConsumer(consumer, consumer_config.events))
        proxy = config.proxy
        self.proxy_site = FrontDoorSite(
            ProxyResource(self.routes, proxy, reactor),
            header_timeout=proxy.header_timeout,
            max_header_bytes=proxy.max_header_bytes,
            idle_timeout=proxy.idle_connection_timeout,
            reactor=reactor,
        )
        self.admin_site = Site(AdminResource(self.agents, config.admin.token), reactor=reactor)
        self.admin_site.displayTracebacks = False
        # Children start in this order: the Docker workers, then the listeners.
        if hasattr(swarm, "setServiceParent"):
            swarm.setServiceParent(self)
        self.listeners = [
            self._listener(config.listen.proxy, self.proxy_site, "proxy"),
            self._listener(config.listen.admin, self.admin_site, "admin"),
        ]
        for listener in self.listeners:
            listener.setServiceParent(self)
        self._events_file = None

    def _listener(self, description: str, site, name: str) -> StreamServerEndpointService:
        listener = StreamServerEndpointService(serverFromString(self.reactor, description), site)
        # Fail startup loudly (twistd exits non-zero) when the port cannot be bound.
        listener._raiseSynchronously = True
        listener.setName(name)
        listener.description = description
        return listener

    def privilegedStartService(self) -> None:
        """
        Bind the listeners (before twistd drops privileges). A port that cannot be bound
        ends startup with one line naming the setting, not a traceback.
        """
        Service.privilegedStartService(self)
        for child in self:
            try:
                child.privilegedStartService()
            except CannotListenError as error:
                reason = getattr(error.socketError, "strerror", None) or error.socketError
                sys.stderr.write(f"{self.config.source}: listen.{child.name}: cannot listen "
                                 f"on {child.description!r}: {reason}\n")
                raise SystemExit(1) from None

    def startService(self) -> None:
        if self.config.events.log_file:
            os.makedirs(os.path.dirname(self.config.events.log_file), exist_ok=True)
            self._events_file = open(self.config.events.log_file, "a", encoding="utf-8")
            self.bus.subscribe(JsonLinesConsumer(self._events_file))
        for consumer, consumer_config in zip(self.consumers, self.config.events.consumers,
                                             strict=True):
            log.info("sending events {patterns} to {consumer}", consumer=consumer.name,
                     patterns=", ".join(consumer_config.events))
            consumer.startService()
        super().startService()
        for agent in self.agents.values():
            agent.start().addErrback(
                lambda failure, name=agent.name: log.failure(
                    "reconciling {agent} failed", failure, agent=name))
        self.watcher.startService()

    async def _stop(self) -> None:
        await gatherResults([listener.stopService() for listener in self.listeners])
        # Long-polls and held requests answer now, with the state as it is.
        for agent in self.agents.values():
            agent.release_waiters()
        timeout = self.config.shutdown.drain_timeout
        registries = [self.proxy_site.channels] + [a.connections for a in self.agents.values()]
        open_count = sum(len(registry) for registry in registries)
        if open_count:
            log.info("draining {count} open connections (up to {timeout:g}s)",
                     count=open_count, timeout=timeout)
        results = await DeferredList([r.drain(timeout, self.reactor) for r in registries])
        aborted = sum(result for ok, result in results if ok)
        if aborted:
            log.warn("aborted {count} connections still open after {timeout:g}s",
                     count=aborted, timeout=timeout)
        await self.watcher.stopService()
        for agent in self.agents.values():
            agent.stop()
            await agent.pool.closeCachedConnections()
        if hasattr(self.swarm, "stopService"):
            await self.swarm.stopService()
        await gatherResults([consumer.stopService() for consumer in self.consumers])
        Service.stopService(self)
        if self._events_file is not None:
            self._events_file.close()

    def stopService(self):
        return Deferred.fromCoroutine(self._stop())


def makeService(config: Config, reactor=None) -> OrchestratorService:
    """
    Build the whole orchestrator for C{config} against the real Docker engine.
    """
    if reactor is None:
        from twisted.internet import reactor
    swarm = DockerSwarm(config.docker.url, reactor, timeout=config.docker.timeout)
    return OrchestratorService(config, swarm=swarm, reactor=reactor)
