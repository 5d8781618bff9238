"""
The model's field validators, each the rule the field's reader applies to the file (one
definition of each rule, in L{values}), and the rule that a host routes to one agent.

They only check: a value built in code must already be as the file's reader would make
it (a number of seconds, a lower-case host, a tuple). Rules that read files (an C{ssl:}
listener's key, the waiting page) are left to the schema, so construction stays cheap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from orchestrator.config import values
from orchestrator.config.hosts import host_list, parse_origin
from orchestrator.config.readers import (
    Issue,
    Validator,
    conforms_to,
    describe,
    instance_of,
    list_of,
)

_NUMBER = (int, float)


def instance(kind: type) -> Validator:
    """
    The field holds a C{kind} (a section, an enumeration's member).
    """
    return conforms_to(instance_of(kind), kind)


def tuple_of(*kinds: type) -> Validator:
    """
    The field holds a tuple of values of C{kinds}.
    """
    return conforms_to(list_of(instance_of(*kinds)), tuple)


duration = conforms_to(values.parse_duration, _NUMBER)
positive_duration = conforms_to(values.positive_duration, _NUMBER)
positive_int = conforms_to(values.positive_int, int)
whole_number = conforms_to(values.whole_number, int)
byte_size = conforms_to(values.byte_size, int)
optional_byte_size = attrs.validators.optional(byte_size)
optional_positive_int = attrs.validators.optional(positive_int)
share = conforms_to(values.fraction, float)
buffer_size = conforms_to(values.buffer_size, int)
boolean = conforms_to(values.boolean, bool)
text = conforms_to(values.non_empty_text, str)
optional_text = attrs.validators.optional(text)
texts = conforms_to(list_of(values.non_empty_text), tuple)
url_path = conforms_to(values.url_path, str)
url_paths = conforms_to(list_of(values.url_path), tuple)
origins = conforms_to(list_of(parse_origin), tuple)
event_patterns = conforms_to(values.event_patterns, tuple)
ip_networks = tuple_of(ipaddress.IPv4Network, ipaddress.IPv6Network)
agent_name = conforms_to(values.agent_name, str)
service_name = conforms_to(values.service_name, str)
backend_scheme = conforms_to(values.backend_scheme, str)
backend_host = conforms_to(values.backend_host, str)
port_number = conforms_to(values.port_number, int)
admin_token = attrs.validators.optional(conforms_to(values.admin_token, str))

# Only text: parsing a listener's description may read files (an ssl: key); the schema
# does that when the file is loaded, and the service when it listens.
endpoint = text
optional_endpoint = optional_text
identities = conforms_to(values.identities, tuple)


def _hidden_http_url(value: object) -> str:
    # The URL is often a secret (a Slack webhook): the message never shows it.
    try:
        return values.http_url(value)
    except ValueError:
        raise ValueError("expected an http or https URL (not shown: it may be a secret)"
                         ) from None


secret_url = conforms_to(_hidden_http_url, str)


def _each_host_once(instance: Any, attribute: attrs.Attribute[Any],
                    hosts: tuple[str, ...]) -> None:
    for _, issue in host_conflicts([(instance.name, hosts)]):
        raise ValueError(f"{type(instance).__name__}.{issue.path}: {issue.message}")


#: An agent's hosts: at least one, each as the file's reader gives it, each listed once.
agent_hosts = attrs.validators.and_(conforms_to(host_list, tuple), _each_host_once)


def distinct_agents(instance: Any, attribute: attrs.Attribute[Any], agents: Any) -> None:
    """
    Agents (with a C{name} and C{hosts}) each called by a name of their own, each of
    their hosts claimed by one of them only.
    """
    where = f"{type(instance).__name__}.{attribute.name}"
    names = [agent.name for agent in agents]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(f"{where}[{index}]: a second agent called {describe(name)}")
    for name, issue in host_conflicts((agent.name, agent.hosts) for agent in agents):
        raise ValueError(f"{where}: {name}.{issue.path}: {issue.message}")


def host_conflicts(
    agents: Iterable[tuple[str, Sequence[str | None]]],
) -> list[tuple[str, Issue]]:
    """
    A problem for every host claimed a second time, by the same agent or another one: the
    name of the agent that claims it again, and an issue at the host's path in that agent
    (C{hosts[1]}). C{agents} gives each agent's name and its hosts in order, as read
    (lower-case); C{None} stands for a host that could not be read, which claims nothing.

    The schema applies it to the file's agents, the model to values built in code: the
    proxy routes a host to one agent.
    """
    conflicts = []
    claimed: dict[str, str] = {}
    for name, hosts in agents:
        for index, host in enumerate(hosts):
            if host is None:
                continue
            owner = claimed.get(host)
            if owner is None:
                claimed[host] = name
            elif owner == name:
                conflicts.append((name, Issue(f"hosts[{index}]", f'"{host}" is listed twice')))
            else:
                conflicts.append((name, Issue(
                    f"hosts[{index}]", f'"{host}" is already claimed by agent "{owner}"')))
    return conflicts
