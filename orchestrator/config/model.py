"""
The configuration as frozen values: what every other part of the orchestrator reads.

Each field is validated with the rule its reader applies to the file (L{validators}), so
a value built in code (a test, the registration API) holds the same invariants as one
read from the file: C{HealthConfig(interval=0)} raises C{ValueError} naming the field.
Checks that read files (an C{ssl:} listener's key, the waiting page) are the schema's,
at load time, not the constructors'.
"""

from __future__ import annotations

import ipaddress
import os
from enum import Enum

import attrs

from orchestrator.config.validators import (
    admin_token,
    agent_hosts,
    agent_name,
    backend_host,
    backend_scheme,
    boolean,
    buffer_size,
    byte_size,
    distinct_agents,
    duration,
    endpoint,
    event_patterns,
    identities,
    instance,
    ip_networks,
    optional_byte_size,
    optional_endpoint,
    optional_positive_int,
    optional_text,
    origins,
    port_number,
    positive_duration,
    positive_int,
    secret_url,
    service_name,
    share,
    text,
    texts,
    tuple_of,
    url_path,
    url_paths,
    whole_number,
)

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"

# The front door's limits: their reasons, with the measurements behind them, are in
# docs/configuration.md#proxy and docs/reliability.md.
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_BUFFERED_BYTES = 32 * 1024
DEFAULT_MAX_CONNECTIONS = 4096
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 128
DEFAULT_MAX_BACKEND_CONNECTIONS = 256


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

    proxy: str = attrs.field(default="tcp:8080", validator=endpoint)
    admin: str = attrs.field(default="tcp:9090:interface=127.0.0.1", validator=endpoint)
    #: The agents' API (registrations, leases), reachable from the agents' overlay only;
    #: C{None}: no agents' API.
    agents: str | None = attrs.field(default=None, validator=optional_endpoint)
    #: A listener of its own for Prometheus (C{GET /metrics}, no token); C{None}: the
    #: metrics are only on the admin listener.
    metrics: str | None = attrs.field(default=None, validator=optional_endpoint)


@attrs.frozen
class DockerConfig:
    """
    How to reach the Docker engine (a Swarm manager).
    """

    # Only text: the default comes from $DOCKER_HOST, which the Docker SDK reads more
    # loosely than the file's docker.url (a bare "host:port" is tcp to it).
    url: str = attrs.field(
        factory=lambda: os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL, validator=text
    )
    #: Seconds one Docker API call may take before it counts as the engine being unavailable.
    timeout: float = attrs.field(default=30.0, validator=positive_duration)


@attrs.frozen
class ProxyWebSocketConfig:
    """
    Timers of the WebSocket relay, the same for every agent.
    """

    #: Seconds from the upgrade request until the agent's handshake is done (else 504).
    handshake_timeout: float = attrs.field(default=10.0, validator=positive_duration)
    #: Seconds between keepalive pings to each peer of a relayed socket; 0 for none.
    ping_interval: float = attrs.field(default=30.0, validator=duration)
    #: Seconds a peer gets to answer a ping (or a close) before its connection is dropped.
    ping_timeout: float = attrs.field(default=10.0, validator=positive_duration)


@attrs.frozen
class ProxyConfig:
    """
    Front-door limits and backend timeouts for the proxy listener.
    """

    #: Networks whose X-Forwarded-* headers we keep (a load balancer in front of us).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(
        default=(), validator=ip_networks
    )
    #: A client must send its complete request headers within this many seconds of
    #: connecting, or of the first byte of a later request on the connection (else 408).
    header_timeout: float = attrs.field(default=10.0, validator=positive_duration)
    #: Seconds a request body may go without a byte arriving while the proxy reads it
    #: (the time it pauses the client for a slow backend does not count), else 408.
    body_timeout: float = attrs.field(default=DEFAULT_BODY_TIMEOUT, validator=positive_duration)
    #: Seconds a response may wait on a client that takes none of it (its buffer full),
    #: else the connection is cut.
    send_timeout: float = attrs.field(default=DEFAULT_SEND_TIMEOUT, validator=positive_duration)
    #: Bytes held for one client connection: of a response, before the backend is paused;
    #: of a request body, before the client is (and the backend is not asked before a
    #: body has this much, or is complete).
    max_buffered_bytes: int = attrs.field(default=DEFAULT_BUFFERED_BYTES, validator=buffer_size)
    #: Client connections open at once (a relayed WebSocket leaves them); beyond, the one
    #: idle longest between requests is closed for it, or, with none, the newcomer gets 503.
    max_connections: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=positive_int)
    #: Client connections from one address at once (trusted proxies excepted); beyond, its
    #: own connection idle longest between requests is closed for it, or it gets 503.
    max_connections_per_client: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
                                                  validator=positive_int)
    #: Connections to one agent's backend at once (in use, idle or being opened); more
    #: requests wait for one, at most C{connect_timeout}, else 503.
    max_backend_connections: int = attrs.field(default=DEFAULT_MAX_BACKEND_CONNECTIONS,
                                               validator=positive_int)
    #: Request line plus headers larger than this get 431.
    max_header_bytes: int = attrs.field(default=16384, validator=byte_size)
    #: Seconds to establish a TCP connection to a backend (else 504).
    connect_timeout: float = attrs.field(default=5.0, validator=positive_duration)
    #: Seconds from sending a request to a backend until its response headers (else 504).
    response_timeout: float = attrs.field(default=60.0, validator=positive_duration)
    #: Seconds an idle client keep-alive connection is kept open.
    idle_connection_timeout: float = attrs.field(default=60.0, validator=positive_duration)
    #: The C{Retry-After} value (seconds) on 503 answers for agents that are not ready.
    retry_after: int = attrs.field(default=3, validator=positive_int)
    websocket: ProxyWebSocketConfig = attrs.field(
        default=ProxyWebSocketConfig(), validator=instance(ProxyWebSocketConfig)
    )
    #: Requests held while their agents wake, over all agents; beyond, the usual 503.
    max_held_requests: int = attrs.field(default=1000, validator=positive_int)
    #: Wakes in progress at once, over all agents; more wait their turn (phase "queued").
    max_concurrent_wakes: int = attrs.field(default=4, validator=positive_int)
    #: The longest C{GET /api/health?wait=N} waits, whatever N asks.
    max_health_wait: float = attrs.field(default=60.0, validator=positive_duration)


@attrs.frozen
class AdminConfig:
    """
    Who may use the admin API.
    """

    #: When set, every admin request but C{GET /healthz} needs C{Authorization: Bearer
    #: <token>}. Read from C{admin.token_file} (a Docker secret); never in a repr.
    token: str | None = attrs.field(default=None, repr=False, validator=admin_token)
    #: Events kept for clients of C{GET /api/events} that reconnect with C{Last-Event-ID}.
    event_buffer: int = attrs.field(default=1000, validator=positive_int)
    #: Clients of the event stream at once; beyond, 503.
    max_event_subscribers: int = attrs.field(default=64, validator=positive_int)
    #: Events waiting for one slow event-stream client; beyond, it is dropped.
    subscriber_queue: int = attrs.field(default=256, validator=positive_int)
    #: Seconds between heartbeats (comment lines) on the event stream.
    event_heartbeat: float = attrs.field(default=15.0, validator=positive_duration)
    #: The longest C{?wait=N} of a wake or sleep waits, whatever N asks.
    max_wait: float = attrs.field(default=300.0, validator=positive_duration)


@attrs.frozen
class AgentApiConfig:
    """
    The agents' API: where registrations and leases are kept, and its limits.
    """

    #: Where registered routes and leases are kept across restarts; C{None}: they are
    #: lost when the orchestrator restarts.
    state_file: str | None = attrs.field(default=None, validator=optional_text)
    #: The largest request body the agents' API reads (else 413).
    max_body_bytes: int = attrs.field(default=16384, validator=byte_size)
    #: Requests one caller (an address) may make a minute (else 429).
    requests_per_minute: int = attrs.field(default=120, validator=positive_int)


@attrs.frozen
class ShutdownConfig:
    """
    What SIGTERM does.
    """

    #: Seconds in-flight requests and open sockets get to finish before they are cut.
    drain_timeout: float = attrs.field(default=30.0, validator=duration)


class ConsumerType(Enum):
    """
    Where an event consumer sends events.
    """

    #: A JSON POST of each event to a URL.
    WEBHOOK = "webhook"
    #: A Slack incoming webhook: one readable message per event.
    SLACK = "slack"


@attrs.frozen
class NodeShare:
    """
    A share of the node's memory (C{limits.memory: "75%"}): the budget is this fraction
    of what the Docker engine's node has, read when the orchestrator starts.
    """

    fraction: float = attrs.field(validator=share)


def _memory_budget(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, NodeShare):
        optional_byte_size(instance, attribute, value)


#: What an agent costs when neither its service nor its configuration says.
DEFAULT_AGENT_MEMORY = 256 * 1024 * 1024


@attrs.frozen
class LimitsConfig:
    """
    The host's budget of awake agents (L{orchestrator.policy.capacity}), and what
    protects an agent from being put to sleep to make room for another.
    """

    #: Agents awake at once (always-on ones count); C{None}: no limit.
    max_awake: int | None = attrs.field(default=None, validator=optional_positive_int)
    #: Bytes the awake agents may cost between them, or a share of the node's memory;
    #: C{None}: no limit.
    memory: int | NodeShare | None = attrs.field(default=None, validator=_memory_budget)
    #: What an agent costs when its service reserves and limits no memory and its
    #: configuration has no C{memory:}.
    default_memory: int = attrs.field(default=DEFAULT_AGENT_MEMORY, validator=byte_size)
    #: An agent that relayed a WebSocket frame this recently is busy: never evicted.
    min_idle: float = attrs.field(default=60.0, validator=duration)
    #: An agent awake for less than this is never evicted (so agents do not thrash).
    min_awake: float = attrs.field(default=60.0, validator=duration)
    #: Wakes that wait for room at once; beyond, a wake is refused.
    max_queued: int = attrs.field(default=100, validator=positive_int)
    #: How long a wake waits for room before it is given up (the agent is degraded).
    queue_timeout: float = attrs.field(default=120.0, validator=positive_duration)
    #: When the node's available memory (C{/proc/meminfo} where the orchestrator runs)
    #: falls under this, idle agents are evicted until it is back; C{None}: never.
    min_available: int | None = attrs.field(default=None, validator=optional_byte_size)

    @property
    def limited(self) -> bool:
        """
        Whether there is a budget at all (else wakes are never held back).
        """
        return (self.max_awake is not None or self.memory is not None
                or self.min_available is not None)


@attrs.frozen
class ConsumerConfig:
    """
    One event consumer: which events go where, and how hard to try.
    """

    type: ConsumerType = attrs.field(validator=instance(ConsumerType))
    #: Where events are POSTed. Often a secret (read from C{url_file}): never in a repr.
    url: str = attrs.field(repr=False, validator=secret_url)
    #: Event types to send: names or wildcards (C{agent.*}); all by default.
    events: tuple[str, ...] = attrs.field(default=("*",), validator=event_patterns)
    #: Seconds one POST may take, connecting included.
    timeout: float = attrs.field(default=5.0, validator=positive_duration)
    #: Further attempts after a failed POST, each after a doubled delay.
    retries: int = attrs.field(default=5, validator=whole_number)
    #: Seconds before the first retry (then 2x, 4x, ... up to a minute).
    backoff: float = attrs.field(default=1.0, validator=positive_duration)
    #: Events waiting to be sent; when full, the oldest is dropped (and counted).
    queue_size: int = attrs.field(default=1000, validator=positive_int)
    #: Slack only: send Block Kit blocks besides the text.
    blocks: bool = attrs.field(default=False, validator=boolean)


@attrs.frozen
class EventsConfig:
    """
    Where structured events go besides the twistd log.
    """

    #: A file to append events to as JSON lines; C{None} for none.
    log_file: str | None = attrs.field(default=None, validator=optional_text)
    consumers: tuple[ConsumerConfig, ...] = attrs.field(
        default=(), validator=tuple_of(ConsumerConfig)
    )


@attrs.frozen
class IdleConfig:
    """
    When an on-demand agent goes back to sleep.
    """

    #: Seconds with no activity after which the agent is drained and scaled to 0.
    timeout: float = attrs.field(default=900.0, validator=positive_duration)
    #: Seconds open connections get to close after the agent is told to go away.
    drain_timeout: float = attrs.field(default=30.0, validator=duration)
    #: Request paths that neither wake nor keep awake (exact, or a prefix ending in C{*}).
    ignore_paths: tuple[str, ...] = attrs.field(default=(), validator=url_paths)
    #: User-Agent substrings (case-insensitive) that neither wake nor keep awake.
    ignore_user_agents: tuple[str, ...] = attrs.field(default=(), validator=texts)
    #: The longest one lease (the agents' API) keeps the agent awake without traffic.
    max_lease: float = attrs.field(default=3600.0, validator=positive_duration)


@attrs.frozen
class HealthConfig:
    """
    How an agent's backend is probed.
    """

    path: str = attrs.field(default="/health", validator=url_path)
    #: Seconds between probes of a ready agent.
    interval: float = attrs.field(default=10.0, validator=positive_duration)
    #: Seconds one probe may take.
    timeout: float = attrs.field(default=2.0, validator=positive_duration)
    #: Consecutive failed probes after which a ready agent is C{degraded}.
    failures: int = attrs.field(default=3, validator=positive_int)


@attrs.frozen
class ColdStartConfig:
    """
    How an agent's cold start looks to clients.
    """

    mode: ColdStart = attrs.field(default=ColdStart.REJECT, validator=instance(ColdStart))
    #: The longest a request is held (hold mode, or a client's C{Prefer: wait=N}).
    hold_timeout: float = attrs.field(default=30.0, validator=positive_duration)
    #: Requests held for this agent at once; beyond, the usual 503.
    max_held: int = attrs.field(default=100, validator=positive_int)
    #: An HTML template for the waiting page (C{$agent}, C{$status}, ...); C{None}: built in.
    #: (The schema checks that the file can be read; here it is only a path.)
    page: str | None = attrs.field(default=None, validator=optional_text)


@attrs.frozen
class AgentWebSocketConfig:
    """
    Limits on the WebSockets relayed to one agent.
    """

    #: Origins a browser may open a socket from (C{https://app.example.com},
    #: C{https://*.example.com}, C{null}); empty for any. Others get 403.
    allowed_origins: tuple[str, ...] = attrs.field(default=(), validator=origins)
    #: Sockets open at once (handshakes included); beyond, 503.
    max_connections: int = attrs.field(default=1000, validator=positive_int)
    #: Bytes in one message, either way; beyond, the sender gets close 1009.
    max_message_size: int = attrs.field(default=16 * 1024 * 1024, validator=byte_size)


#: The credentials the agents' API can accept as an agent's.
IDENTITIES = ("token", "address")


@attrs.frozen
class RegistrationConfig:
    """
    What an agent may do through the agents' API.
    """

    #: The credentials that identify it: C{token} (its C{token_file}) and C{address} (a
    #: caller whose overlay address is a running task of its service).
    identity: tuple[str, ...] = attrs.field(default=IDENTITIES, validator=identities)
    #: Other services a registered route may point at: shell patterns over the backend's
    #: host (C{tasks.preview-*}); none by default: routes go to the agent's own tasks.
    backends: tuple[str, ...] = attrs.field(default=(), validator=texts)
    #: Routes it may hold at once.
    max_routes: int = attrs.field(default=20, validator=positive_int)
    #: Leases it may hold at once.
    max_leases: int = attrs.field(default=10, validator=positive_int)


@attrs.frozen
class Backend:
    """
    A parsed backend URL: where the proxy sends an agent's traffic.
    """

    scheme: str = attrs.field(validator=backend_scheme)
    #: A name or an IP address, without the brackets of IPv6 (those are the URL's).
    host: str = attrs.field(validator=backend_host)
    port: int = attrs.field(validator=port_number)

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

    name: str = attrs.field(validator=agent_name)
    service: str = attrs.field(validator=service_name)
    backend: Backend = attrs.field(validator=instance(Backend))
    #: Lower-case host names; a leading C{*.} is a wildcard for every subdomain.
    hosts: tuple[str, ...] = attrs.field(validator=agent_hosts)
    policy: Policy = attrs.field(default=Policy.ON_DEMAND, validator=instance(Policy))
    #: Seconds a wake may take before the agent is C{degraded}.
    startup_timeout: float = attrs.field(default=60.0, validator=positive_duration)
    #: Seconds after a failed wake before a request may try to wake it again.
    wake_retry: float = attrs.field(default=30.0, validator=duration)
    idle: IdleConfig = attrs.field(default=IdleConfig(), validator=instance(IdleConfig))
    health: HealthConfig = attrs.field(default=HealthConfig(), validator=instance(HealthConfig))
    websocket: AgentWebSocketConfig = attrs.field(
        default=AgentWebSocketConfig(), validator=instance(AgentWebSocketConfig)
    )
    cold_start: ColdStartConfig = attrs.field(
        default=ColdStartConfig(), validator=instance(ColdStartConfig)
    )
    #: Its credential for the agents' API, from C{token_file} (a Docker secret); never in
    #: a repr.
    token: str | None = attrs.field(default=None, repr=False, validator=admin_token)
    registration: RegistrationConfig = attrs.field(
        default=RegistrationConfig(), validator=instance(RegistrationConfig)
    )
    #: What the agent costs in bytes when its service reserves and limits no memory
    #: (L{LimitsConfig}); C{None}: C{limits.default_memory}.
    memory: int | None = attrs.field(default=None, validator=optional_byte_size)
    #: The tasks an on-demand agent's wake asks Swarm for (each reserving C{memory} of
    #: the budget); an always-on agent's are its service's own.
    replicas: int = attrs.field(default=1, validator=positive_int)


@attrs.frozen
class Config:
    """
    The whole configuration, as loaded from one file.
    """

    #: The file it came from (for messages and SIGHUP reload).
    source: str = attrs.field(validator=instance(str))
    #: Each with its own name and hosts: a host routes to one agent.
    agents: tuple[AgentConfig, ...] = attrs.field(
        validator=[tuple_of(AgentConfig), distinct_agents]
    )
    listen: ListenConfig = attrs.field(default=ListenConfig(), validator=instance(ListenConfig))
    docker: DockerConfig = attrs.field(factory=DockerConfig, validator=instance(DockerConfig))
    proxy: ProxyConfig = attrs.field(default=ProxyConfig(), validator=instance(ProxyConfig))
    shutdown: ShutdownConfig = attrs.field(
        default=ShutdownConfig(), validator=instance(ShutdownConfig)
    )
    events: EventsConfig = attrs.field(default=EventsConfig(), validator=instance(EventsConfig))
    admin: AdminConfig = attrs.field(default=AdminConfig(), validator=instance(AdminConfig))
    agent_api: AgentApiConfig = attrs.field(
        default=AgentApiConfig(), validator=instance(AgentApiConfig)
    )
    limits: LimitsConfig = attrs.field(default=LimitsConfig(), validator=instance(LimitsConfig))

    def agent(self, name: str) -> AgentConfig:
        """
        Return the agent called C{name}.

        @raise KeyError: if there is none.
        """
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

