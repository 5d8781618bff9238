"""
The configuration as frozen values: what every other part of the orchestrator reads.
"""

from __future__ import annotations

import ipaddress
import os
from enum import Enum

import attrs

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


class Policy(Enum):
    """
    Who owns an agent's lifecycle.
    """

    #: We scale it 0 -> 1 on the first request and back to 0 after C{idle.timeout}.
    ON_DEMAND = "on_demand"
    #: Swarm keeps it running; we only poll its health and report.
    ALWAYS_ON = "always_on"


class ColdStart(Enum):
    """
    What the proxy does with a request for an agent that is not ready.
    """

    #: Answer 503 with the state and C{Retry-After} at once (the poll protocol).
    REJECT = "reject"
    #: Keep the request, wake the agent, forward it once ready (up to C{hold_timeout}).
    HOLD = "hold"


@attrs.frozen
class ListenConfig:
    """
    Twisted endpoint strings for the two listeners.
    """

    proxy: str = "tcp:8080"
    admin: str = "tcp:9090:interface=127.0.0.1"


@attrs.frozen
class DockerConfig:
    """
    How to reach the Docker engine (a Swarm manager).
    """

    url: str = attrs.field(factory=lambda: os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL)
    #: Seconds one Docker API call may take before it counts as the engine being unavailable.
    timeout: float = 30.0


@attrs.frozen
class ProxyWebSocketConfig:
    """
    Timers of the WebSocket relay, the same for every agent.
    """

    #: Seconds from the upgrade request until the agent's handshake is done (else 504).
    handshake_timeout: float = 10.0
    #: Seconds between keepalive pings to each peer of a relayed socket; 0 for none.
    ping_interval: float = 30.0
    #: Seconds a peer gets to answer a ping (or a close) before its connection is dropped.
    ping_timeout: float = 10.0


@attrs.frozen
class ProxyConfig:
    """
    Front-door limits and backend timeouts for the proxy listener.
    """

    #: Networks whose X-Forwarded-* headers we keep (a load balancer in front of us).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: A client must send its complete request headers within this many seconds (else 408).
    header_timeout: float = 10.0
    #: Request line plus headers larger than this get 431.
    max_header_bytes: int = 16384
    #: Seconds to establish a TCP connection to a backend (else 504).
    connect_timeout: float = 5.0
    #: Seconds from sending a request to a backend until its response headers (else 504).
    response_timeout: float = 60.0
    #: Seconds an idle client keep-alive connection is kept open.
    idle_connection_timeout: float = 60.0
    #: The C{Retry-After} value (seconds) on 503 answers for agents that are not ready.
    retry_after: int = 3
    websocket: ProxyWebSocketConfig = ProxyWebSocketConfig()
    #: Requests held while their agents wake, over all agents; beyond, the usual 503.
    max_held_requests: int = 1000
    #: Wakes in progress at once, over all agents; more wait their turn (phase "queued").
    max_concurrent_wakes: int = 4
    #: The longest C{GET /api/health?wait=N} waits, whatever N asks.
    max_health_wait: float = 60.0


@attrs.frozen
class AdminConfig:
    """
    Who may use the admin API.
    """

    #: When set, every admin request but C{GET /healthz} needs C{Authorization: Bearer
    #: <token>}. Read from C{admin.token_file} (a Docker secret); never in a repr.
    token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ShutdownConfig:
    """
    What SIGTERM does.
    """

    #: Seconds in-flight requests and open sockets get to finish before they are cut.
    drain_timeout: float = 30.0


class ConsumerType(Enum):
    """
    Where an event consumer sends events.
    """

    #: A JSON POST of each event to a URL.
    WEBHOOK = "webhook"
    #: A Slack incoming webhook: one readable message per event.
    SLACK = "slack"


@attrs.frozen
class ConsumerConfig:
    """
    One event consumer: which events go where, and how hard to try.
    """

    type: ConsumerType
    #: Where events are POSTed. Often a secret (read from C{url_file}): never in a repr.
    url: str = attrs.field(repr=False)
    #: Event types to send: names or wildcards (C{agent.*}); all by default.
    events: tuple[str, ...] = ("*",)
    #: Seconds one POST may take, connecting included.
    timeout: float = 5.0
    #: Further attempts after a failed POST, each after a doubled delay.
    retries: int = 5
    #: Seconds before the first retry (then 2x, 4x, ... up to a minute).
    backoff: float = 1.0
    #: Events waiting to be sent; when full, the oldest is dropped (and counted).
    queue_size: int = 1000
    #: Slack only: send Block Kit blocks besides the text.
    blocks: bool = False


@attrs.frozen
class EventsConfig:
    """
    Where structured events go besides the twistd log.
    """

    #: A file to append events to as JSON lines; C{None} for none.
    log_file: str | None = None
    consumers: tuple[ConsumerConfig, ...] = ()


@attrs.frozen
class IdleConfig:
    """
    When an on-demand agent goes back to sleep.
    """

    #: Seconds with no activity after which the agent is drained and scaled to 0.
    timeout: float = 900.0
    #: Seconds open connections get to close after the agent is told to go away.
    drain_timeout: float = 30.0
    #: Request paths that neither wake nor keep awake (exact, or a prefix ending in C{*}).
    ignore_paths: tuple[str, ...] = ()
    #: User-Agent substrings (case-insensitive) that neither wake nor keep awake.
    ignore_user_agents: tuple[str, ...] = ()


@attrs.frozen
class HealthConfig:
    """
    How an agent's backend is probed.
    """

    path: str = "/health"
    #: Seconds between probes of a ready agent.
    interval: float = 10.0
    #: Seconds one probe may take.
    timeout: float = 2.0
    #: Consecutive failed probes after which a ready agent is C{degraded}.
    failures: int = 3


@attrs.frozen
class ColdStartConfig:
    """
    How an agent's cold start looks to clients.
    """

    mode: ColdStart = ColdStart.REJECT
    #: The longest a request is held (hold mode, or a client's C{Prefer: wait=N}).
    hold_timeout: float = 30.0
    #: Requests held for this agent at once; beyond, the usual 503.
    max_held: int = 100
    #: An HTML template for the waiting page (C{$agent}, C{$status}, ...); C{None}: built in.
    page: str | None = None


@attrs.frozen
class AgentWebSocketConfig:
    """
    Limits on the WebSockets relayed to one agent.
    """

    #: Origins a browser may open a socket from (C{https://app.example.com},
    #: C{https://*.example.com}, C{null}); empty for any. Others get 403.
    allowed_origins: tuple[str, ...] = ()
    #: Sockets open at once (handshakes included); beyond, 503.
    max_connections: int = 1000
    #: Bytes in one message, either way; beyond, the sender gets close 1009.
    max_message_size: int = 16 * 1024 * 1024


@attrs.frozen
class Backend:
    """
    A parsed backend URL: where the proxy sends an agent's traffic.
    """

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """
        The URL again, always with its port: C{http://tasks.dutybound:8081}.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@attrs.frozen
class AgentConfig:
    """
    One agent: which Swarm service it is, where its backend is, which hosts route to it.
    """

    name: str
    service: str
    backend: Backend
    #: Lower-case host names; a leading C{*.} is a wildcard for every subdomain.
    hosts: tuple[str, ...]
    policy: Policy = Policy.ON_DEMAND
    #: Seconds a wake may take before the agent is C{degraded}.
    startup_timeout: float = 60.0
    #: Seconds after a failed wake before a request may try to wake it again.
    wake_retry: float = 30.0
    idle: IdleConfig = IdleConfig()
    health: HealthConfig = HealthConfig()
    websocket: AgentWebSocketConfig = AgentWebSocketConfig()
    cold_start: ColdStartConfig = ColdStartConfig()


@attrs.frozen
class Config:
    """
    The whole configuration, as loaded from one file.
    """

    #: The file it came from (for messages and SIGHUP reload).
    source: str
    agents: tuple[AgentConfig, ...]
    listen: ListenConfig = ListenConfig()
    docker: DockerConfig = attrs.field(factory=DockerConfig)
    proxy: ProxyConfig = ProxyConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    events: EventsConfig = EventsConfig()
    admin: AdminConfig = AdminConfig()

    def agent(self, name: str) -> AgentConfig:
        """
        Return the agent called C{name}.

        @raise KeyError: if there is none.
        """
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)
