"""
makeService: the composition root. Everything is built here, and only here, from a
L{Config}; the service tree is the lifecycle.

The tree's children start in order: the Swarm client (its thread pool), the events file
and consumers, the agents (reconciled with Swarm), the Swarm watcher, then the proxy
and admin listeners (bound earlier, before twistd drops privileges). Stopping runs in
phases (L{orchestrator.shutdown}).
"""

from __future__ import annotations

import signal
import sys

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

from orchestrator.admin.app import AdminApp
from orchestrator.admin.stream import EventBuffer, EventStream
from orchestrator.agentapi.api import AgentApi
from orchestrator.agentapi.identity import Identifier, RequestBudget
from orchestrator.agentapi.resource import AgentApiResource
from orchestrator.agents.capacity import Capacity
from orchestrator.agents.probe import HttpProber
from orchestrator.agents.reconcile import Reconciler
from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.routes import HostConflict
from orchestrator.agents.runtime import Agent
from orchestrator.agents.state import StateKeeper
from orchestrator.agents.taskpoll import TaskPoll
from orchestrator.config.diff import diff, running_config
from orchestrator.config.model import AgentConfig, Config
from orchestrator.config.readers import ConfigError
from orchestrator.config.schema import load_config
from orchestrator.events.bus import EventBus, FilteredConsumer
from orchestrator.events.consumers import make_consumer
from orchestrator.events.jsonlines import JsonLinesFile
from orchestrator.http.client import BackendClients
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.http.local import KeptBodies
from orchestrator.metrics.exposition import MetricsResource
from orchestrator.metrics.hub import Metrics
from orchestrator.proxy.frontdoor import FrontDoorSite
from orchestrator.proxy.holding import HoldCounter
from orchestrator.proxy.root import ProxyResource
from orchestrator.relay.upgrade import WebSocketRelay
from orchestrator.shutdown import StopPhases, stop_in_phases
from orchestrator.swarm.docker import DockerSwarm
from orchestrator.swarm.watcher import SwarmWatcher

log = Logger()


class ListenFailed(Exception):
    """
    A listener could not bind its port.
    """

    def __init__(self, name: str, description: str, reason: str) -> None:
        super().__init__(f"listen.{name}: cannot listen on {description!r}: {reason}")


class Listener(Service):
    """
    A listening port: bound by C{privilegedStartService} (or C{startService}, whichever
    comes first), closed by C{stopService}. A port that cannot be bound raises
    L{ListenFailed} at once, so startup fails instead of running without it.
    """

    def __init__(self, reactor, description: str, factory, name: str) -> None:
        self.description = description
        self._endpoint = serverFromString(reactor, description)
        self._factory = factory
        #: What it serves (a Site), for a reload to reconfigure.
        self.site = factory
        self._port = None
        self.setName(name)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._bind()

    def startService(self) -> None:
        super().startService()
        self._bind()

    def _bind(self) -> None:
        if self._port is not None:
            return
        outcome: list = []
        self._endpoint.listen(self._factory).addBoth(outcome.append)
        if not outcome:
            # Endpoints that listen later (none of Twisted's stream servers) cannot fail
            # startup; they are refused rather than left to fail unseen.
            raise ListenFailed(self.name, self.description, "the endpoint did not listen at once")
        if isinstance(outcome[0], Failure):
            error = outcome[0].value
            reason = getattr(getattr(error, "socketError", None), "strerror", None) or (
                getattr(error, "socketError", None) or error)
            raise ListenFailed(self.name, self.description, str(reason))
        self._port = outcome[0]

    def stopService(self):
        super().stopService()
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None


class AgentsService(Service):
    """
    The agents of the registry: reconciled with Swarm when it starts; their timers and
    flows stopped (nothing scaled) and their idle backend connections closed when it
    stops.
    """

    def __init__(self, registry: AgentRegistry, reconciler: Reconciler) -> None:
        self._registry = registry
        self._reconciler = reconciler
        self.setName("runtimes")

    def startService(self) -> None:
        super().startService()
        # One read of every service for all the agents, not one per agent.
        self._reconciler.start(self._registry.values())

    def stopService(self) -> Deferred:
        super().stopService()
        self._reconciler.stop()
        self._registry.stop()
        return gatherResults([agent.pool.close_idle() for agent in self._registry.values()])


class OrchestratorService(MultiService):
    """
    The root service: C{agents} is the registry, C{proxy_site} and C{admin_site} the
    listeners' sites.
    """

    def __init__(self, config: Config, *, swarm, reactor, prober=None,
                 http=None, reload_on_sighup: bool = False) -> None:
        """
        @param swarm: the L{orchestrator.swarm.values.ISwarm} (a service of the tree).
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
        self._wake_slots = DeferredSemaphore(config.proxy.max_concurrent_wakes)
        self._reload_on_sighup = reload_on_sighup
        self._previous_sighup = None
        # The host's budget, which every agent's wake asks for room.
        self.capacity = Capacity(config.limits, clock=reactor, bus=self.bus, swarm=swarm)
        # The awake agents' tasks on every node, read together (a worker's container
        # events never reach the manager's engine).
        self.task_poll = TaskPoll(swarm, reactor)
        self.agents = AgentRegistry(self._make_agent, bus=self.bus, capacity=self.capacity)
        self.agents.load(config.agents)
        self.reconciler = Reconciler(self.agents, swarm, reactor, task_poll=self.task_poll)

        swarm.setServiceParent(self)
        # After the Swarm client (it may read the node's memory), before the agents.
        self.capacity.setServiceParent(self)
        if config.events.log_file:
            JsonLinesFile(config.events.log_file, self.bus).setServiceParent(self)
        # Subscribed now, so the events of the start are queued until they run.
        self.consumers = []
        for consumer_config in config.events.consumers:
            consumer = make_consumer(consumer_config, reactor=reactor, http=http)
            self.bus.subscribe(FilteredConsumer(consumer, consumer_config.events))
            consumer.setServiceParent(self)
            self.consumers.append(consumer)
        if config.agent_api.state_file:
            # Before the agents: what it read is taken up as they are found awake.
            StateKeeper(self.agents, config.agent_api.state_file, reactor).setServiceParent(self)
        self.metrics = Metrics(self.agents, self.bus, swarm=swarm, consumers=self.consumers)
        admin = config.admin
        # Events are numbered from this run's start: a client resuming with an id of an
        # earlier run is told it may have missed some.
        self.event_buffer = EventBuffer(f"{int(reactor.seconds() * 1000):x}", admin.event_buffer)
        self.bus.subscribe(self.event_buffer)
        self.event_stream = EventStream(
            self.event_buffer, clock=reactor, max_subscribers=admin.max_event_subscribers,
            queue_size=admin.subscriber_queue, heartbeat=admin.event_heartbeat)
        AgentsService(self.agents, self.reconciler).setServiceParent(self)
        # Swarm's events nudge the agents; started once they have begun to reconcile.
        self.watcher = SwarmWatcher(swarm, self.reconciler, bus=self.bus, clock=reactor)
        self.watcher.setServiceParent(self)

        proxy = config.proxy
        # One way to reach backends, for the HTTP client and the WebSocket relay.
        endpoints = BackendEndpoints(reactor, proxy.connect_timeout)
        self.proxy_resource = ProxyResource(
            self.agents, proxy, clock=reactor,
            clients=BackendClients(reactor, endpoints, proxy.max_backend_connections,
                                   proxy.max_buffered_bytes // 2),
            relay=WebSocketRelay(proxy, reactor, endpoints, meter=self.metrics.traffic),
            held=HoldCounter(proxy.max_held_requests),
            meter=self.metrics.traffic,
        )
        self.proxy_site = FrontDoorSite(self.proxy_resource, proxy, reactor=reactor)
        self.metrics.collector.holds = self.proxy_resource.held
        self.metrics.collector.subscribers = self.event_stream
        self.admin = AdminApp(
            self.agents, clock=reactor, token=admin.token,
            running_config=lambda: self.config, stream=self.event_stream,
            metrics=self.metrics.registry, holds=self.proxy_resource.held,
            max_wait=admin.max_wait)
        # The private listeners behind the same hardened front door as the proxy: a
        # header deadline, size limits, bodies kept small.
        self.admin_site = self._front_door(self.admin.resource(), proxy, reactor)
        self.listeners = [
            Listener(reactor, config.listen.proxy, self.proxy_site, "proxy"),
            Listener(reactor, config.listen.admin, self.admin_site, "admin"),
        ]
        if config.listen.metrics is not None:
            self.metrics_site = self._front_door(
                MetricsResource(self.metrics.registry, reactor), proxy, reactor)
            self.listeners.append(
                Listener(reactor, config.listen.metrics, self.metrics_site, "metrics"))
        self.agent_api = None
        if config.listen.agents is not None:
            api_config = config.agent_api
            self.agent_api = AgentApi(
                self.agents, Identifier(self.agents, swarm),
                RequestBudget(api_config.requests_per_minute, reactor), bus=self.bus,
                clock=reactor, max_body=api_config.max_body_bytes)
            # The proxy's hardened front door: a header deadline and size limits.
            self.agents_site = FrontDoorSite(
                AgentApiResource(self.agent_api, reactor), proxy, reactor=reactor)
            self.listeners.append(
                Listener(reactor, config.listen.agents, self.agents_site, "agents"))
        for listener in self.listeners:
            listener.setServiceParent(self)

    @staticmethod
    def _front_door(resource, proxy, reactor, max_body: int = 16384) -> FrontDoorSite:
        return FrontDoorSite(KeptBodies(resource, limit=max_body, clock=reactor), proxy,
                             reactor=reactor)

    def _make_agent(self, config: AgentConfig) -> Agent:
        return Agent(config, swarm=self.swarm, prober=self.prober, bus=self.bus,
                     reactor=self.reactor, wake_slots=self._wake_slots,
                     capacity=self.capacity, task_poll=self.task_poll)

    def privilegedStartService(self) -> None:
        """
        Bind the listeners (before twistd drops privileges). A port that cannot be bound
        ends startup with one line naming the setting, not a traceback.
        """
        try:
            super().privilegedStartService()
        except ListenFailed as error:
            sys.stderr.write(f"{self.config.source}: {error}\n")
            raise SystemExit(1) from None

    def startService(self) -> None:
        super().startService()
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
            changes = self.apply(new)
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload refused: {problem}", problem=problem)
            self.bus.emit("config.reload_failed", None, problems=error.problems)
            return None
        self.bus.emit("config.reloaded", None, **changes)
        return changes

    def apply(self, new: Config) -> dict:
        """
        Make the running service match C{new} where that can be done live: agents come,
        go and change (keeping their state), proxy limits, the budget (C{limits}) and the
        admin token change.
        Listeners and the Docker engine need a restart; that is reported, not done.

        @raise ConfigError: if the change cannot be made (nothing changed then).
        """
        change = diff(self.config, new)
        try:
            fresh = self.agents.apply(change)
        except HostConflict as conflict:
            raise ConfigError([f"{new.source}: {conflict}"]) from None
        self.reconciler.start(fresh)
        if change.limits_changed:
            self.capacity.reconfigure(new.limits)
        self.proxy_resource.reconfigure(new.proxy)
        for listener in self.listeners:
            if isinstance(listener.site, FrontDoorSite):
                listener.site.reconfigure(new.proxy)
        self.admin.reconfigure(new.admin)
        if change.restart_needed:
            log.warn("changes to {sections} take effect at the next restart",
                     sections=", ".join(change.restart_needed))
        self.config = running_config(self.config, new)
        return {"added": list(change.added_names), "removed": list(change.removed),
                "changed": list(change.changed_names),
                "restart_needed": list(change.restart_needed)}

    # Stopping -------------------------------------------------------------------------

    def _release_waiters(self) -> None:
        self.agents.release_waiters()
        # Event-stream clients reconnect (with Last-Event-ID) to the next run.
        self.event_stream.close()

    def stopService(self) -> Deferred:
        Service.stopService(self)
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        watchers = [self.watcher, self.getServiceNamed("runtimes")]
        workers = [child for child in self if child not in (*self.listeners, *watchers)]
        phases = StopPhases(
            listeners=self.listeners,
            release_waiters=self._release_waiters,
            connections=lambda: [self.proxy_site.channels,
                                 *([self.agents_site.channels] if self.agent_api else []),
                                 *self.agents.connections()],
            watchers=watchers,
            workers=workers,
        )
        return Deferred.fromCoroutine(stop_in_phases(
            phases, drain_timeout=self.config.shutdown.drain_timeout, clock=self.reactor))


#: Descriptors besides the client connections and their backends': listeners, the
#: Docker engine's connections, log files, the thread pool's.
SPARE_DESCRIPTORS = 256


def raise_descriptor_limit(max_connections: int, *, getrlimit=None, setrlimit=None) -> int:
    """
    Raise the soft limit on open files to the hard limit (systemd's default soft limit,
    1,024, is reached by 1,024 idle sockets; its hard limit is far higher), as Go's
    runtime does, and warn when even that is short of what C{max_connections} client
    connections with their backends' need. Returns the soft limit in force.
    """
    import resource

    getrlimit = getrlimit or resource.getrlimit
    setrlimit = setrlimit or resource.setrlimit
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    needed = 2 * max_connections + SPARE_DESCRIPTORS
    if soft < needed:
        log.warn("open files are limited to {soft}: proxy.max_connections {connections} "
                 "needs {needed} (set LimitNOFILE= or the container's nofile ulimit)",
                 soft=soft, connections=max_connections, needed=needed,
                 event="orchestrator.descriptor_limit")
    return soft


def makeService(config: Config, reactor=None) -> OrchestratorService:
    """
    Build the whole orchestrator for C{config} against the real Docker engine.
    """
    if reactor is None:
        from twisted.internet import reactor
    raise_descriptor_limit(config.proxy.max_connections)
    swarm = DockerSwarm(config.docker.url, reactor, timeout=config.docker.timeout)
    return OrchestratorService(config, swarm=swarm, reactor=reactor, reload_on_sighup=True)
