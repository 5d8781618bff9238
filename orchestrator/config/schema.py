"""
The configuration file's schema: YAML -> L{Config}, and one agent's mapping (from the
file, or JSON) -> L{AgentConfig}; every problem reported at once.

Each problem names the file, the key path and what was expected, e.g.
C{orchestrator.yaml: agents.dutybound.idle.timeout: expected a duration like "15m", got "soon"}.
"""

from __future__ import annotations

import functools
from typing import Any

from orchestrator.config.document import load_document
from orchestrator.config.files import (
    log_file,
    server_endpoint,
    template_file,
    token_file,
    url_file,
)
from orchestrator.config.hosts import host_list, parse_host, parse_origin
from orchestrator.config.model import (
    AdminConfig,
    AgentApiConfig,
    AgentConfig,
    AgentWebSocketConfig,
    Backend,
    ColdStart,
    ColdStartConfig,
    Config,
    ConsumerConfig,
    ConsumerType,
    DockerConfig,
    EventsConfig,
    HealthConfig,
    IdleConfig,
    LimitsConfig,
    ListenConfig,
    NodeShare,
    Policy,
    ProxyConfig,
    ProxyWebSocketConfig,
    RegistrationConfig,
    ShutdownConfig,
)
from orchestrator.config.readers import (
    ConfigError,
    Issue,
    Problems,
    as_mapping,
    collect,
    describe,
    join_path,
    list_of,
    one_of,
    read_fields,
)
from orchestrator.config.validators import host_conflicts
from orchestrator.config.values import (
    agent_name,
    backend_address,
    boolean,
    buffer_size,
    byte_size,
    docker_url,
    event_patterns,
    http_url,
    identities,
    ip_network,
    non_empty_text,
    parse_duration,
    positive_duration,
    positive_int,
    service_name,
    share,
    url_path,
    whole_number,
)


def load_config(path: str) -> Config:
    """
    Read and parse the configuration file at C{path}.

    @raise ConfigError: with every problem found, if the file cannot be read or is not valid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([Issue("", f"cannot read the file: {e.strerror or e}")], path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [Issue("", f"not UTF-8 text: {e.reason} at offset {e.start}")], path
        ) from None
    return parse_config(text, path)


def parse_config(text: str, source: str) -> Config:
    """
    Parse the YAML configuration C{text}, which came from C{source} (a file name, for messages).

    @raise ConfigError: with one line per problem, if there is any.
    """
    document = load_document(text, source)
    return _read(source, functools.partial(_config, source),
                 {} if document is None else document)


def parse_agent(name: str, mapping: object) -> AgentConfig:
    """
    Read the agent called C{name} from C{mapping} (JSON given to a registration API, say)
    as the file's C{agents.NAME} is read: the same keys, defaults, rules and messages.

    A problem's path is relative to the agent (C{idle.timeout}, C{hosts[2]}; C{""} for the
    name, or for a C{mapping} that is not one); in the file the same mistake is at
    C{agents.NAME.} and that path. Whether its hosts are claimed by other agents is for the
    whole configuration to say: L{Config} refuses them when built.

    @raise ConfigError: with every problem found, and no source.
    """
    return _read(None, functools.partial(_one_agent, name), mapping)


def _read(source: str | None, read: Any, value: object) -> Any:
    """
    C{read(value)}, its problems raised as a L{ConfigError} from C{source}.
    """
    try:
        return read(value)
    except Problems as e:
        raise ConfigError(e.issues, source) from None
    except ValueError as e:
        # The value itself is not a mapping.
        raise ConfigError([Issue("", str(e))], source) from None


def _config(source: str, document: object) -> Config:
    fields = read_fields(
        document,
        {
            "listen": _listen,
            "docker": _docker,
            "proxy": _proxy,
            "shutdown": _shutdown,
            "events": _events,
            "admin": _admin,
            "agent_api": _agent_api,
            "limits": _limits,
            "agents": _agents,
        },
        required=("agents",),
    )
    return Config(source=source, **fields)


def _listen(value: object) -> ListenConfig:
    return ListenConfig(**read_fields(value, {"proxy": server_endpoint, "admin": server_endpoint,
                                              "agents": server_endpoint,
                                              "metrics": server_endpoint}))


def _agent_api(value: object) -> AgentApiConfig:
    return AgentApiConfig(**read_fields(value, {"state_file": log_file,
                                                "max_body_bytes": byte_size,
                                                "requests_per_minute": positive_int}))


def _limits(value: object) -> LimitsConfig:
    return LimitsConfig(**read_fields(value, {
        "max_awake": _or_null(positive_int),
        "memory": _or_null(_memory_budget),
        "default_memory": byte_size,
        "min_idle": parse_duration,
        "min_awake": parse_duration,
        "max_queued": positive_int,
        "queue_timeout": positive_duration,
        "min_available": _or_null(byte_size),
    }))


def _memory_budget(value: object) -> int | NodeShare:
    """
    A number of bytes (C{"8GiB"}), or a share of the node's memory (C{"75%"}).
    """
    if isinstance(value, str) and value.strip().endswith("%"):
        return NodeShare(share(value))
    try:
        return byte_size(value)
    except ValueError:
        raise ValueError(f'expected a size like "8GiB" or a share of the node\'s memory like '
                         f'"75%", got {describe(value)}') from None


def _or_null(read):
    """
    C{read}, or C{None} for YAML's C{null} (no limit).
    """
    return lambda value: None if value is None else read(value)


def _registration(value: object) -> RegistrationConfig:
    return RegistrationConfig(**read_fields(value, {"identity": identities,
                                                    "backends": list_of(non_empty_text),
                                                    "max_routes": positive_int,
                                                    "max_leases": positive_int}))


def _docker(value: object) -> DockerConfig:
    return DockerConfig(**read_fields(value, {"url": docker_url, "timeout": positive_duration}))


def _proxy(value: object) -> ProxyConfig:
    fields = read_fields(
        value,
        {
            "trusted_proxies": list_of(ip_network),
            "header_timeout": positive_duration,
            "body_timeout": positive_duration,
            "send_timeout": positive_duration,
            "max_buffered_bytes": buffer_size,
            "max_connections": positive_int,
            "max_connections_per_client": positive_int,
            "max_backend_connections": positive_int,
            "max_header_bytes": byte_size,
            "connect_timeout": positive_duration,
            "response_timeout": positive_duration,
            "idle_connection_timeout": positive_duration,
            "retry_after": positive_int,
            "websocket": _proxy_websocket,
            "max_held_requests": positive_int,
            "max_concurrent_wakes": positive_int,
            "max_health_wait": positive_duration,
        },
    )
    return ProxyConfig(**fields)


def _shutdown(value: object) -> ShutdownConfig:
    return ShutdownConfig(**read_fields(value, {"drain_timeout": parse_duration}))


def _events(value: object) -> EventsConfig:
    return EventsConfig(**read_fields(value, {"log_file": log_file,
                                          "consumers": list_of(_consumer)}))


def _consumer(value: object) -> ConsumerConfig:
    mapping = as_mapping(value)
    # Checks across keys, on the raw mapping, so they are reported with the others.
    problems = []
    if ("url" in mapping) == ("url_file" in mapping):
        problems.append(Issue("url", "expected either url or url_file (a file holding the "
                                     "URL, such as a Docker secret)" if "url" not in mapping
                                     else "expected either url or url_file, not both"))
    if mapping.get("blocks") is True and mapping.get("type") != ConsumerType.SLACK.value:
        problems.append(Issue("blocks", "only a slack consumer sends blocks"))
    try:
        fields = read_fields(
            mapping,
            {
                "type": one_of(ConsumerType),
                "url": http_url,
                "url_file": url_file,
                "events": event_patterns,
                "timeout": positive_duration,
                "retries": whole_number,
                "backoff": positive_duration,
                "queue_size": positive_int,
                "blocks": boolean,
            },
            required=("type",),
        )
    except Problems as e:
        raise Problems(e.issues + problems) from None
    if problems:
        raise Problems(problems)
    fields["url"] = fields.pop("url_file", None) or fields["url"]
    return ConsumerConfig(**fields)


def _admin(value: object) -> AdminConfig:
    fields = read_fields(value, {
        "token_file": token_file,
        "event_buffer": positive_int,
        "max_event_subscribers": positive_int,
        "subscriber_queue": positive_int,
        "event_heartbeat": positive_duration,
        "max_wait": positive_duration,
    })
    return AdminConfig(token=fields.pop("token_file", None), **fields)


def _agents(value: object) -> tuple[AgentConfig, ...]:
    mapping = as_mapping(value)
    issues: list[Issue] = []
    agents = []
    for name, item in mapping.items():
        agent = collect(issues, str(name), functools.partial(_agent, name), item)
        if agent is not None:
            agents.append(agent)
    issues.extend(_repeated_hosts(mapping))
    if issues:
        raise Problems(issues)
    return tuple(agents)


def _one_agent(name: object, value: object) -> AgentConfig:
    """
    An agent apart from the others: L{_agent}, and its own hosts each listed once.
    """
    issues: list[Issue] = []
    agent = collect(issues, "", functools.partial(_agent, name), value)
    issues.extend(issue for _, issue in host_conflicts([(str(name), _hosts_read(value))]))
    if issues:
        raise Problems(issues)
    return agent


#: Why C{replicas} is refused on an always-on agent.
ALWAYS_ON_REPLICAS = ("an always-on agent runs the replicas its service asks for (Swarm's "
                      "to keep; docker service scale), the orchestrator never scales it: "
                      "leave replicas out")


def _agent(name: object, value: object) -> AgentConfig:
    """
    The agent called C{name} (a key of C{agents}, not yet checked) from its mapping.

    Hosts listed twice are left to the caller, which checks them over every agent
    (L{_repeated_hosts}) and reports them after the other problems; such an agent is not
    built (L{AgentConfig} refuses it), its problems being the caller's to add.
    """
    issues: list[Issue] = []
    collect(issues, "", agent_name, name)
    fields = collect(issues, "", functools.partial(read_fields, readers=_AGENT_FIELDS,
                                                   required=("backend", "hosts")), value)
    if issues or host_conflicts([(str(name), fields["hosts"])]):
        raise Problems(issues)
    if "replicas" in fields and fields.get("policy") is Policy.ALWAYS_ON:
        raise Problems([Issue("replicas", ALWAYS_ON_REPLICAS)])
    fields.setdefault("service", name)
    if "token_file" in fields:
        fields["token"] = fields.pop("token_file")
    return AgentConfig(name=name, **fields)


def _backend(value: object) -> Backend:
    return Backend(*backend_address(value))


def _idle(value: object) -> IdleConfig:
    fields = read_fields(
        value,
        {
            "timeout": positive_duration,
            "drain_timeout": parse_duration,
            "ignore_paths": list_of(url_path),
            "ignore_user_agents": list_of(non_empty_text),
            "max_lease": positive_duration,
        },
    )
    return IdleConfig(**fields)


def _cold_start(value: object) -> ColdStartConfig:
    fields = read_fields(
        value,
        {
            "mode": one_of(ColdStart),
            "hold_timeout": positive_duration,
            "max_held": positive_int,
            "page": template_file,
        },
    )
    return ColdStartConfig(**fields)


def _health(value: object) -> HealthConfig:
    fields = read_fields(
        value,
        {
            "path": url_path,
            "interval": positive_duration,
            "timeout": positive_duration,
            "failures": positive_int,
        },
    )
    return HealthConfig(**fields)


def _proxy_websocket(value: object) -> ProxyWebSocketConfig:
    fields = read_fields(
        value,
        {
            "handshake_timeout": positive_duration,
            "ping_interval": parse_duration,
            "ping_timeout": positive_duration,
        },
    )
    return ProxyWebSocketConfig(**fields)


def _agent_websocket(value: object) -> AgentWebSocketConfig:
    fields = read_fields(
        value,
        {
            "allowed_origins": list_of(parse_origin),
            "max_connections": positive_int,
            "max_message_size": byte_size,
        },
    )
    return AgentWebSocketConfig(**fields)


# The keys of an agent's mapping, after the readers they name.
_AGENT_FIELDS = {
    "service": service_name,
    "backend": _backend,
    "hosts": host_list,
    "policy": one_of(Policy),
    "startup_timeout": positive_duration,
    "wake_retry": parse_duration,
    "idle": _idle,
    "health": _health,
    "websocket": _agent_websocket,
    "cold_start": _cold_start,
    "token_file": token_file,
    "registration": _registration,
    "memory": byte_size,
    "replicas": positive_int,
}


def _repeated_hosts(agents: dict[Any, Any]) -> list[Issue]:
    """
    A problem for every host claimed a second time, by the same agent or another one
    (L{host_conflicts}), at C{NAME.hosts[INDEX]}.

    It reads the hosts of the raw C{agents} mapping again, skipping what is invalid (that
    is reported elsewhere), so that agents with other problems are checked too.
    """
    claims = [(str(name), _hosts_read(agent)) for name, agent in agents.items()]
    return [Issue(join_path(name, issue.path), issue.message)
            for name, issue in host_conflicts(claims)]


def _hosts_read(agent: object) -> list[str | None]:
    """
    The hosts of a raw agent mapping, each read, or C{None} where it cannot be.
    """
    hosts = agent.get("hosts") if isinstance(agent, dict) else None
    if not isinstance(hosts, list):
        return []
    return [_host_or_none(host) for host in hosts]


def _host_or_none(value: object) -> str | None:
    try:
        return parse_host(value)
    except ValueError:
        return None
