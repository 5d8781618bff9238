"""
makeService: the MultiService tree built from a Config, and its phased shutdown.

Stopping runs in sequence (twisted's MultiService would stop children concurrently and
leave open connections alone): stop accepting, drain HTTP and relayed connections within
C{shutdown.drain_timeout}, stop watching Swarm's events and the agents' timers (never
scaling anything), then stop the workers (the Docker thread pool) and the event consumers.
"""

from __future__ import annotations

import os
import signal
import sys

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.server import Site

from orchestrator.admin.api import AdminResource
from orchestrator.agents.probe import HttpProber
from orchestrator.agents.routes import RouteTable
from orchestrator.agents.runtime import Agent
from orchestrator.config.model import Config
from orchestrator.config.readers import ConfigError
from orchestrator.config.schema import load_config
from orchestrator.events.bus import EventBus, FilteredConsumer
from orchestrator.events.consumers import make_consumer
from orchestrator.events.jsonlines import JsonLinesConsumer
from orchestrator.http.client import BackendClients
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.proxy.frontdoor import FrontDoorSite
from orchestrator.proxy.holding import HoldCounter
from orchestrator.proxy.root import ProxyResource
from orchestrator.relay.upgrade import WebSocketRelay
from orchestrator.swarm.docker import DockerSwarm
from orchestrator.swarm.watcher import SwarmWatcher

log = Logger()


class OrchestratorService(MultiService):
    """
    The root service. C{agents} maps names to L{Agent}; C{routes} is the live host table.
    """

    def __init__(self, config: Config, *, swarm, reactor, prober=None,
                 http=None, reload_on_sighup: bool = False) -> None:
        """
        @param http: the HTTP client of the event consumers (treq's C{post}); by default
            each makes its own on C{reactor}.
        @param reload_on_sighup: install a SIGHUP handler that reloads the configuration
            file (L{reload}) while the service runs.
        """
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.swarm = swarm
        self.bus = EventBus(reactor)
        self.prober = prober if prober is not None else HttpProber(reactor)
        self.routes: RouteTable[Agent] = RouteTable()
        self.agents: dict[str, Agent] = {}
        self._wake_slots = DeferredSemaphore(config.proxy.max_concurrent_wakes)
        self._reload_on_sighup = reload_on_sighup
        self._previous_sighup = None
        for agent_config in config.agents:
            self._add_agent(agent_config)
        # Swarm's events nudge the agents; started once they have reconciled.
        self.watcher = SwarmWatcher(swarm, self.agents.values(), bus=self.bus, clock=reactor)
        # Subscribed now, so the events of the start are queued until they run.
        self.consumers = [make_consumer(consumer, reactor=reactor, http=http)
                          for consumer in config.events.consumers]
        for consumer, consumer_config in zip(self.consumers, config.events.consumers,
                                             strict=True):
            self.bus.subscribe(FilteredConsumer(consumer, consumer_config.events))
        proxy = config.proxy
        # One way to reach backends, for the HTTP client and the WebSocket relay.
        endpoints = BackendEndpoints(reactor, proxy.connect_timeout)
        self.proxy_resource = ProxyResource(
            self.routes, proxy, clock=reactor,
            clients=BackendClients(reactor, endpoints),
            relay=WebSocketRelay(proxy, reactor, endpoints),
            held=HoldCounter(proxy.max_held_requests),
        )
        self.proxy_site = FrontDoorSite(
            self.proxy_resource,
            header_timeout=proxy.header_timeout,
            max_header_bytes=proxy.max_header_bytes,
            idle_timeout=proxy.idle_connection_timeout,
            reactor=reactor,
        )
        self.admin_resource = AdminResource(self.agents, config.admin.token, clock=reactor)
        self.admin_site = Site(self.admin_resource, reactor=reactor)
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

    def _add_agent(self, agent_config) -> Agent:
        agent = Agent(agent_config, swarm=self.swarm, prober=self.prober, bus=self.bus,
                      reactor=self.reactor, wake_slots=self._wake_slots)
        self.agents[agent.name] = agent
        for host in agent_config.hosts:
            self.routes.add(host, agent, owner=agent.name)
        return agent

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
        if self._reload_on_sighup:
            self._previous_sighup = signal.signal(
                signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))

    # Reloading ------------------------------------------------------------------------

    def reload(self) -> dict | None:
        """
        Read the configuration file again and apply it (SIGHUP). A file with problems is
        refused whole: each problem is logged, C{config.reload_failed} is emitted, and
        the running configuration stays. Returns what changed, or C{None} if refused.
        """
        try:
            new = load_config(self.config.source)
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload refused: {problem}", problem=problem)
            self.bus.emit("config.reload_failed", None, problems=error.problems)
            return None
        changes = self.apply(new)
        self.bus.emit("config.reloaded", None, **changes)
        return changes

    def apply(self, new: Config) -> dict:
        """
        Make the running service match C{new} where that can be done live: agents come,
        go and change (keeping their state), proxy limits and the admin token change.
        Listeners and the Docker engine need a restart; that is reported, not done.
        """
        old_agents = {agent.name: agent for agent in self.config.agents}
        new_agents = {agent.name: agent for agent in new.agents}
        removed = sorted(set(old_agents) - set(new_agents))
        added = sorted(set(new_agents) - set(old_agents))
        changed = sorted(name for name in set(old_agents) & set(new_agents)
                         if old_agents[name] != new_agents[name])
        # Every route that goes or moves is dropped first, so a host may change hands.
        for name in removed + changed:
            self.routes.remove_owner(name)
        for name in removed:
            agent = self.agents.pop(name)
            agent.stop()
            agent.release_waiters()
        for name in changed:
            agent, agent_config = self.agents[name], new_agents[name]
            old_config = old_agents[name]
            if (agent_config.service, agent_config.policy) != (old_config.service, old_config.policy):
                agent.stop()
                agent.release_waiters()
                self._add_agent(agent_config).start()
            else:
                agent.reconfigure(agent_config)
                for host in agent_config.hosts:
                    self.routes.add(host, agent, owner=name)
        for name in added:
            self._add_agent(new_agents[name]).start()
        self.watcher.set_agents(self.agents.values())
        self.proxy_resource.reconfigure(new.proxy)
        self.proxy_site.header_timeout = new.proxy.header_timeout
        self.proxy_site.max_header_bytes = new.proxy.max_header_bytes
        self.proxy_site.timeOut = new.proxy.idle_connection_timeout
        self.admin_resource.set_token(new.admin.token)
        restart_needed = [section for section in ("listen", "docker", "events")
                          if getattr(new, section) != getattr(self.config, section)]
        if restart_needed:
            log.warn("changes to {sections} take effect at the next restart",
                     sections=", ".join(restart_needed))
        self.config = attrs.evolve(new, listen=self.config.listen, docker=self.config.docker,
                                   events=self.config.events)
        return {"added": added, "removed": removed, "changed": changed,
                "restart_needed": restart_needed}

    async def _stop(self) -> None:
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
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
            await agent.pool.close_idle()
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
    return OrchestratorService(config, swarm=swarm, reactor=reactor, reload_on_sighup=True)
