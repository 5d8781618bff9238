"""
YAML configuration -> frozen attrs values, with every problem reported at once.

Each problem names the file, the key path and what was expected, e.g.
C{orchestrator.yaml: agents.dutybound.idle.timeout: expected a duration like "15m", got "soon"}.

The readers below are hand-written rather than cattrs (not a dependency): each reads one
YAML value and either returns the parsed value or raises C{ValueError} with a message of
the form C{expected ..., got ...}. Readers of mappings and lists collect the problems of
every key or item and raise them together as L{_Problems}, each with its key path.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml
from twisted.internet.endpoints import _parseServer

from orchestrator.events import EVENT_TYPES

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


class ConfigError(Exception):
    """
    The configuration is not valid. C{problems} holds one line per problem, each naming
    the file, the key path and what was expected.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str) -> Config:
    """
    Read and parse the configuration file at C{path}.

    @raise ConfigError: with every problem found, if the file cannot be read or is not valid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the file: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text: {e.reason} at offset {e.start}"]) from None
    return parse_config(text, path)


def parse_config(text: str, source: str) -> Config:
    """
    Parse the YAML configuration C{text}, which came from C{source} (a file name, for messages).

    @raise ConfigError: with one line per problem, if there is any.
    """
    document = _load_yaml(text, source)
    try:
        return _config(source, {} if document is None else document)
    except _Problems as e:
        raise ConfigError(
            [f"{source}: {path}: {message}" for path, message in e.problems]
        ) from None
    except ValueError as e:
        # The document itself is not a mapping.
        raise ConfigError([f"{source}: {e}"]) from None


def parse_duration(value: object) -> float:
    """
    Seconds from a duration: a number of seconds (C{30}, C{"1.5"}) or a number with one
    unit (C{"500ms"}, C{"30s"}, C{"15m"}, C{"1h"}).

    @raise ValueError: naming C{value}, if it is not a finite duration of 0 or more.
    """
    if isinstance(value, str):
        number, unit = _split_unit(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number, unit = value, "s"
    else:
        raise ValueError(f'expected a duration like "15m", got {_describe(value)}')
    try:
        seconds = float(number) * _SECONDS_PER_UNIT[unit]
    except ValueError:
        raise ValueError(f'expected a duration like "15m", got {_describe(value)}') from None
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {_describe(value)}")
    if seconds < 0:
        raise ValueError(f"expected a duration of 0 or more, got {_describe(value)}")
    return seconds


def parse_host(value: object) -> str:
    """
    A host name that routes to an agent, lower-cased: a DNS name (C{agent.example.com}), a
    wildcard for its subdomains (C{*.example.com}, at least two labels after the C{*.}), or
    an IP address (IPv6 in brackets, as in a C{Host} header: C{[::1]}).

    Ports are refused rather than dropped: the proxy routes on the name alone.

    @raise ValueError: naming C{value} and the reason, if it is none of those.
    """
    if not isinstance(value, str):
        raise ValueError(f'expected a host name like "agent.example.com", got {_describe(value)}')
    host = value.lower()
    address = _ip_address(host)
    if address is not None:
        return f"[{address}]" if address.version == 6 else str(address)
    reason = _host_name_problem(host)
    if reason is not None:
        raise ValueError(
            f'expected a host name like "agent.example.com", got {_describe(value)} ({reason})'
        )
    return host


def parse_origin(value: object) -> str:
    """
    An origin a browser may open WebSockets from, as browsers send it in C{Origin}:
    C{scheme://host} with an optional port (a default one is dropped), lower-cased. The
    host may be a C{*.} wildcard for every subdomain; C{null} is the opaque origin.

    @raise ValueError: naming C{value}, if it is none of those.
    """
    expected = 'expected an origin like "https://app.example.com"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {_describe(value)}")
    origin = value.strip().lower()
    if origin == "null":
        return origin
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        raise ValueError(f"{expected}, got {_describe(value)}")
    scheme, host, port = match["scheme"], match["host"], match["port"]
    name = host.removeprefix("*.")
    if _ip_address(name) is not None:
        valid = name == host
    else:
        valid = _host_name_problem(host) is None
    if not valid or (port is not None and not 0 < int(port) < 65536):
        raise ValueError(f"{expected}, got {_describe(value)}")
    if port is None or _DEFAULT_PORTS.get(scheme) == int(port):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


# The readers. Each takes one YAML value and returns its parsed form or raises ValueError.

_Reader = Callable[[Any], Any]

_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES_PER_UNIT = {"b": 1, "kib": 1024, "mib": 1024 * 1024}
_SIZE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>B|KiB|MiB)?", re.IGNORECASE)
_AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# Docker's rule for service names.
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Swarm resolves service names, which may contain "_", so backends are checked loosely.
_BACKEND_HOST = re.compile(r"[a-z0-9_.-]+")
_DOCKER_SCHEMES = ("unix", "tcp", "http", "https", "ssh", "npipe")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[^:/\[\]]+)(?::(?P<port>[0-9]{1,5}))?"
)


def _load_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        where = ""
        if e.problem_mark is not None:
            where = f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}: "
        raise ConfigError([f"{source}: {where}invalid YAML: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{source}: invalid YAML: {e}"]) from None


class _StrictLoader(yaml.SafeLoader):
    """
    A C{SafeLoader} that refuses a key given twice in one mapping. PyYAML would keep the
    last one silently, so a second C{agents.dutybound} would replace the first unnoticed.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            # Merge keys ("<<") may repeat, and only scalar keys are surely hashable.
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found a duplicate key {_describe(key)}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Problems(ValueError):
    """
    Several problems inside one value, each a (key path relative to it, message) pair.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


def _config(source: str, document: object) -> Config:
    fields = _fields(
        document,
        {
            "listen": _listen,
            "docker": _docker,
            "proxy": _proxy,
            "shutdown": _shutdown,
            "events": _events,
            "admin": _admin,
            "agents": _agents,
        },
        required=("agents",),
    )
    return Config(source=source, **fields)


def _listen(value: object) -> ListenConfig:
    return ListenConfig(**_fields(value, {"proxy": _endpoint, "admin": _endpoint}))


def _docker(value: object) -> DockerConfig:
    return DockerConfig(**_fields(value, {"url": _docker_url, "timeout": _positive_duration}))


def _proxy(value: object) -> ProxyConfig:
    fields = _fields(
        value,
        {
            "trusted_proxies": _list_of(_network),
            "header_timeout": _positive_duration,
            "max_header_bytes": _size,
            "connect_timeout": _positive_duration,
            "response_timeout": _positive_duration,
            "idle_connection_timeout": _positive_duration,
            "retry_after": _positive_int,
            "websocket": _proxy_websocket,
            "max_held_requests": _positive_int,
            "max_concurrent_wakes": _positive_int,
            "max_health_wait": _positive_duration,
        },
    )
    return ProxyConfig(**fields)


def _shutdown(value: object) -> ShutdownConfig:
    return ShutdownConfig(**_fields(value, {"drain_timeout": parse_duration}))


def _events(value: object) -> EventsConfig:
    return EventsConfig(**_fields(value, {"log_file": _log_file,
                                          "consumers": _list_of(_consumer)}))


def _consumer(value: object) -> ConsumerConfig:
    mapping = _mapping(value)
    # Checks across keys, on the raw mapping, so they are reported with the others.
    problems = []
    if ("url" in mapping) == ("url_file" in mapping):
        problems.append(("url", "expected either url or url_file (a file holding the URL, "
                                "such as a Docker secret)" if "url" not in mapping else
                                "expected either url or url_file, not both"))
    if mapping.get("blocks") is True and mapping.get("type") != ConsumerType.SLACK.value:
        problems.append(("blocks", "only a slack consumer sends blocks"))
    try:
        fields = _fields(
            mapping,
            {
                "type": _choice(ConsumerType),
                "url": _http_url,
                "url_file": _url_file,
                "events": _event_patterns,
                "timeout": _positive_duration,
                "retries": _count,
                "backoff": _positive_duration,
                "queue_size": _positive_int,
                "blocks": _bool,
            },
            required=("type",),
        )
    except _Problems as e:
        raise _Problems(e.problems + problems) from None
    if problems:
        raise _Problems(problems)
    fields["url"] = fields.pop("url_file", None) or fields["url"]
    return ConsumerConfig(**fields)


def _http_url(value: object) -> str:
    expected = 'expected an http or https URL like "https://hooks.example.com/orchestrator"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {_describe(value)}")
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (parses the port, raising ValueError when it is not one)
    except ValueError as e:
        raise ValueError(f"{expected}, got {_describe(value)} ({e})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{expected}, got {_describe(value)}")
    return value


def _secret_file(value: object) -> str:
    """
    The text held by a file (a Docker secret such as C{/run/secrets/webhook_url}), read
    now, stripped. Its content is never shown: a problem names the file only.
    """
    path = _text(value)
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {_describe(value)}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{_describe(value)} is not UTF-8 text") from None


def _token_file(value: object) -> str:
    token = _secret_file(value)
    if len(token) < 16:
        raise ValueError(f"{_describe(value)} must hold a token of at least 16 characters")
    return token


def _admin(value: object) -> AdminConfig:
    fields = _fields(value, {"token_file": _token_file})
    return AdminConfig(token=fields.get("token_file"))


def _url_file(value: object) -> str:
    """
    The URL held by a file (a Docker secret such as C{/run/secrets/webhook_url}).
    """
    content = _secret_file(value)
    try:
        return _http_url(content)
    except ValueError:
        raise ValueError(f"{_describe(value)} does not hold an http or https URL") from None


def _event_patterns(value: object) -> tuple[str, ...]:
    patterns = _list_of(_event_pattern)(value)
    if not patterns:
        raise ValueError('expected at least one event type or pattern, got an empty list')
    return patterns


def _event_pattern(value: object) -> str:
    """
    An event type or a wildcard pattern that matches at least one known type, so a
    typo does not silently select nothing.
    """
    pattern = _text(value)
    if not any(fnmatch.fnmatchcase(known, pattern) for known in EVENT_TYPES):
        close = difflib.get_close_matches(pattern, list(EVENT_TYPES), n=1)
        hint = f'did you mean "{close[0]}"?' if close else (
            "known: " + ", ".join(EVENT_TYPES))
        raise ValueError(f"{_describe(value)} matches no event type ({hint})")
    return pattern


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of 0 or more, got {_describe(value)}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def _agents(value: object) -> tuple[AgentConfig, ...]:
    mapping = _mapping(value)
    problems: list[tuple[str, str]] = []
    agents = []
    for name, item in mapping.items():
        key = str(name)
        if not (isinstance(name, str) and _AGENT_NAME.fullmatch(name)):
            problems.append(
                (
                    key,
                    'expected an agent name like "dutybound" (lower-case letters, digits, "_" '
                    f'and "-", at most 63 characters), got {_describe(name)}',
                )
            )
        agent = _collect(problems, key, functools.partial(_agent, key), item)
        if agent is not None:
            agents.append(agent)
    problems.extend(_duplicate_hosts(mapping))
    if problems:
        raise _Problems(problems)
    return tuple(agents)


def _agent(name: str, value: object) -> AgentConfig:
    fields = _fields(
        value,
        {
            "service": _service_name,
            "backend": _backend,
            "hosts": _hosts,
            "policy": _choice(Policy),
            "startup_timeout": _positive_duration,
            "wake_retry": parse_duration,
            "idle": _idle,
            "health": _health,
            "websocket": _agent_websocket,
            "cold_start": _cold_start,
        },
        required=("backend", "hosts"),
    )
    fields.setdefault("service", name)
    return AgentConfig(name=name, **fields)


def _idle(value: object) -> IdleConfig:
    fields = _fields(
        value,
        {
            "timeout": _positive_duration,
            "drain_timeout": parse_duration,
            "ignore_paths": _list_of(_path),
            "ignore_user_agents": _list_of(_text),
        },
    )
    return IdleConfig(**fields)


def _cold_start(value: object) -> ColdStartConfig:
    fields = _fields(
        value,
        {
            "mode": _choice(ColdStart),
            "hold_timeout": _positive_duration,
            "max_held": _positive_int,
            "page": _template_file,
        },
    )
    return ColdStartConfig(**fields)


def _template_file(value: object) -> str:
    """
    A readable UTF-8 file (the waiting page template), checked now so a typo in its path
    is a config error rather than a broken page later.
    """
    path = _text(value)
    try:
        with open(path, encoding="utf-8") as template:
            template.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"expected a readable UTF-8 template file, got {_describe(value)} "
                         f"({getattr(error, 'strerror', None) or error})") from None
    return path


def _health(value: object) -> HealthConfig:
    fields = _fields(
        value,
        {
            "path": _path,
            "interval": _positive_duration,
            "timeout": _positive_duration,
            "failures": _positive_int,
        },
    )
    return HealthConfig(**fields)


def _proxy_websocket(value: object) -> ProxyWebSocketConfig:
    fields = _fields(
        value,
        {
            "handshake_timeout": _positive_duration,
            "ping_interval": parse_duration,
            "ping_timeout": _positive_duration,
        },
    )
    return ProxyWebSocketConfig(**fields)


def _agent_websocket(value: object) -> AgentWebSocketConfig:
    fields = _fields(
        value,
        {
            "allowed_origins": _list_of(parse_origin),
            "max_connections": _positive_int,
            "max_message_size": _size,
        },
    )
    return AgentWebSocketConfig(**fields)


def _duplicate_hosts(agents: dict[Any, Any]) -> list[tuple[str, str]]:
    """
    A problem for every host claimed a second time, by the same agent or another one.

    It reads the hosts of the raw C{agents} mapping again, skipping what is invalid (that
    is reported elsewhere), so that agents with other problems are checked too.
    """
    problems = []
    claimed: dict[str, str] = {}
    for name, agent in agents.items():
        hosts = agent.get("hosts") if isinstance(agent, dict) else None
        if not isinstance(hosts, list):
            continue
        for index, value in enumerate(hosts):
            try:
                host = parse_host(value)
            except ValueError:
                continue
            path = f"{name}.hosts[{index}]"
            owner = claimed.get(host)
            if owner is None:
                claimed[host] = str(name)
            elif owner == str(name):
                problems.append((path, f'"{host}" is listed twice'))
            else:
                problems.append((path, f'"{host}" is already claimed by agent "{owner}"'))
    return problems


def _fields(
    value: object, readers: dict[str, _Reader], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """
    Read a mapping with a fixed set of keys, each with its own reader; return the values
    read, by key, as keyword arguments for an attrs class (absent keys keep their default).
    """
    mapping = _mapping(value)
    problems: list[tuple[str, str]] = []
    fields = {}
    for key, item in mapping.items():
        read = readers.get(key)
        if read is None:
            problems.append((str(key), _unknown_key(str(key), list(readers))))
        else:
            fields[key] = _collect(problems, key, read, item)
    problems.extend((key, "required") for key in required if key not in mapping)
    if problems:
        raise _Problems(problems)
    return fields


def _list_of(read_item: _Reader) -> _Reader:
    """
    A reader of a list whose items are each read with C{read_item}; it returns a tuple.
    """

    def read(value: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_describe(value)}")
        problems: list[tuple[str, str]] = []
        items = tuple(
            _collect(problems, f"[{index}]", read_item, item) for index, item in enumerate(value)
        )
        if problems:
            raise _Problems(problems)
        return items

    return read


def _collect(problems: list[tuple[str, str]], key: str, read: _Reader, value: object) -> Any:
    """
    Return C{read(value)}; if it fails, add its problems under C{key} to C{problems} and
    return C{None}, which the caller never uses: it raises once it has read everything.
    """
    try:
        return read(value)
    except _Problems as e:
        problems.extend((_join(key, path), message) for path, message in e.problems)
    except ValueError as e:
        problems.append((key, str(e)))
    return None


def _join(key: str, path: str) -> str:
    """
    A key path: C{("idle", "timeout")} -> C{"idle.timeout"}, C{("hosts", "[2]")} -> C{"hosts[2]"}.
    """
    if not path:
        return key
    if path.startswith("["):
        return key + path
    return f"{key}.{path}"


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f'unknown key, did you mean "{close[0]}"?'
    return "unknown key, expected one of " + ", ".join(f'"{k}"' for k in known)


def _mapping(value: object) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    """
    Show a value in a message as YAML would spell it (C{"soon"}, C{5}, C{null}), or by its
    kind for collections (C{a list}).
    """
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None or isinstance(value, str | bool | int | float):
        return json.dumps(value, ensure_ascii=False)
    return f"a {type(value).__name__}"


def _split_unit(text: str) -> tuple[str, str]:
    """
    C{"500ms"} -> C{("500", "ms")}; a bare number is in seconds.
    """
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return text[: -len(unit)], unit
    return text, "s"


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError(f"expected a duration greater than 0, got {_describe(value)}")
    return seconds


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {_describe(value)}")
    return value


def _size(value: object) -> int:
    """
    A positive number of bytes: C{16384}, C{"16KiB"}, C{"1MiB"}.
    """
    size = value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is not None:
            size = int(match["number"]) * _BYTES_PER_UNIT[(match["unit"] or "b").lower()]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'expected a size in bytes like 16384 or "16KiB", got {_describe(value)}')
    return size


def _log_file(value: object) -> str | None:
    """
    A file to append to, whose directory exists or can be created by this user.
    """
    if value is None:
        return None
    path = os.path.abspath(_text(value))
    ancestor = os.path.dirname(path)
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    if os.path.isdir(path) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"expected a file path in a directory this user can write, got "
                         f"{_describe(value)} ({ancestor} is not writable)"
                         if not os.path.isdir(path) else
                         f"expected a file path, got the directory {_describe(value)}")
    return path


def _choice(choices: type[Enum]) -> _Reader:
    """
    A reader of one of an enumeration's values: C{"on_demand"} -> C{Policy.ON_DEMAND}.
    """

    def read(value: object) -> Enum:
        for choice in choices:
            if value == choice.value:
                return choice
        expected = " or ".join(f'"{choice.value}"' for choice in choices)
        raise ValueError(f"expected {expected}, got {_describe(value)}")

    return read


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {_describe(value)}")
    return value


def _path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f'expected a path starting with "/", got {_describe(value)}')
    return value


def _network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """
    An address or a CIDR network; host bits are allowed (C{10.1.2.3/8} is C{10.0.0.0/8}).
    """
    expected = 'expected an IP address or network like "10.0.0.0/8"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {_describe(value)}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{expected}, got {_describe(value)}") from None


def _endpoint(value: object) -> str:
    """
    A Twisted server endpoint description, checked by parsing it (which for C{ssl:} also
    loads the certificate, so a missing file is reported now rather than at start-up).
    """
    expected = 'expected a Twisted endpoint like "tcp:8080"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {_describe(value)}")
    try:
        _parseServer(value, None)
    # Endpoint parsers (plugins among them) raise many kinds of exceptions for bad input.
    except Exception as e:
        raise ValueError(f"{expected}, got {_describe(value)} ({e})") from None
    return value


def _docker_url(value: object) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in _DOCKER_SCHEMES:
        raise ValueError(
            'expected a Docker URL like "unix:///var/run/docker.sock" or '
            f'"tcp://manager:2376", got {_describe(value)}'
        )
    return value


def _service_name(value: object) -> str:
    if not isinstance(value, str) or not _SERVICE_NAME.fullmatch(value):
        raise ValueError(
            'expected a Swarm service name (letters, digits, "_", "." and "-", at most 63 '
            f"characters), got {_describe(value)}"
        )
    return value


def _backend(value: object) -> Backend:
    """
    An agent's backend URL: http or https, a host and an optional port, and nothing else.
    """
    expected = 'expected a URL like "http://tasks.dutybound:8081"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {_describe(value)}")
    reason = _backend_problem(value)
    if reason is not None:
        raise ValueError(f"{expected}, got {_describe(value)} ({reason})")
    url = urlsplit(value)
    return Backend(url.scheme, url.hostname, url.port or _DEFAULT_PORTS[url.scheme])


def _backend_problem(text: str) -> str | None:
    """
    Why C{text} is not a backend URL, or C{None} if it is one.
    """
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        return str(e)
    if url.scheme not in _DEFAULT_PORTS:
        return "the scheme must be http or https"
    if "@" in url.netloc:
        return "user info is not allowed"
    if not url.hostname:
        return "a host is required"
    if _ip_address(url.hostname) is None and not _BACKEND_HOST.fullmatch(url.hostname):
        return "the host is not a valid name"
    if "_" in url.hostname:
        # Stack services are named <stack>_<service>; their DNS aliases have no "_".
        return ('the host may not contain "_" (the HTTP client refuses such names): use '
                'the service\'s alias without the stack prefix, e.g. "tasks.demo" rather '
                'than "tasks.mystack_demo"')
    if port == 0:
        return "the port must be from 1 to 65535"
    if url.path not in ("", "/"):
        return "a path is not allowed"
    if url.query or url.fragment:
        return "a query or fragment is not allowed"
    return None


def _hosts(value: object) -> tuple[str, ...]:
    hosts = _list_of(parse_host)(value)
    if not hosts:
        raise ValueError("expected at least one host, got an empty list")
    return hosts


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    The IP address C{text} spells (IPv6 with or without brackets), or C{None}.
    """
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_name_problem(host: str) -> str | None:
    """
    Why the lower-case C{host} is not a DNS name or a C{*.} wildcard, or C{None} if it is.
    """
    if ":" in host:
        return "a port is not allowed; the proxy ignores ports"
    if len(host) > 253:
        return "longer than 253 characters"
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return 'a wildcard needs at least two labels after "*."'
    for label in labels:
        if "*" in label:
            return '"*" is allowed only as the whole first label'
        if not _DNS_LABEL.fullmatch(label):
            return f'"{label}" is not a valid label (1-63 of a-z, 0-9 and "-", no "-" at the ends)'
    if labels[-1].isdigit():
        return "not a valid IP address"
    return None
