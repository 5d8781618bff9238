"""
YAML configuration -> frozen attrs values, with every problem reported at once.

Each problem names the file, the key path and what was expected, e.g.
C{orchestrator.yaml: agents.dutybound.idle.timeout: expected a duration like "15m", got "soon"}.
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


@attrs.frozen
class ShutdownConfig:
    """
    What SIGTERM does.
    """

    #: Seconds in-flight requests and open sockets get to finish before they are cut.
    drain_timeout: float = 30.0


@attrs.frozen
class EventsConfig:
    """
    Where structured events go besides the twistd log.
    """

    #: A file to append events to as JSON lines; C{None} for none.
    log_file: str | None = None


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
class Backend:
    """
    A parsed backend URL: where the proxy sends an agent's traffic.
    """

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
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

    def agent(self, name: str) -> AgentConfig:
        """
        Return the agent called C{name}.

        @raise KeyError: if there is none.
        """
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)


class ConfigError(Exception):
    """
    The configuration is not valid. C{problems} holds one line per problem, each naming
    the file, the key path and what was expected.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
