"""
What an agent may register at run time: a host under one of its own wildcards that no
one else serves, routed to its own tasks or to a service the operator allowed. Pure
decisions; the registry applies them.

Routes that tenants write are the easiest way to take another tenant's traffic or to
reach what no one should (the Docker socket proxy, the admin port, a host address), so
each rule says no unless the configuration says yes.
"""

from __future__ import annotations

import fnmatch

from orchestrator.config.hosts import ip_address
from orchestrator.config.model import AgentConfig, Backend
from orchestrator.config.values import backend_address


class Refused(Exception):
    """
    A registration is refused: C{code} is the HTTP status that says why (403 not yours,
    409 taken or over the limit, 422 an invalid value), C{field} the request's field at
    fault, if one is.
    """

    def __init__(self, code: int, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.field = field


def falls_under(host: str, pattern: str) -> bool:
    """
    Whether C{host} is a subdomain that the wildcard C{pattern} (C{*.example.com}) covers.
    """
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def check_host(agent: AgentConfig, host: str, *, served_by: str | None, configured: bool,
               held: tuple[str, ...]) -> None:
    """
    May C{agent} register C{host} (already a valid registered host)?

    @param served_by: the agent the host routes to now, if any.
    @param configured: whether C{host} is an exact host of the configuration.
    @param held: the hosts the agent has registered already (registering one again
        replaces its route).
    @raise Refused: if not.
    """
    if not any(falls_under(host, pattern) for pattern in agent.hosts):
        raise Refused(403, f"{host} is not under any of agent {agent.name}'s wildcard hosts",
                      field="host")
    if configured or (served_by is not None and served_by != agent.name):
        raise Refused(409, f"{host} is already served by another route", field="host")
    limit = agent.registration.max_routes
    if host not in held and len(held) >= limit:
        raise Refused(409, f"agent {agent.name} holds {limit} routes, the most allowed: "
                           "remove one first")


def route_backend(agent: AgentConfig, *, port: object = None, backend: object = None) -> Backend:
    """
    Where a registered route sends its traffic: the agent's own tasks on C{port}, or
    another service's C{backend} URL where the agent's C{registration.backends} allows
    its host. Never an IP address, never another scheme than http or https.

    @raise Refused: naming the field, if neither or both are given or the value is not
        allowed.
    """
    if (port is None) == (backend is None):
        raise Refused(422, 'expected either "port" (the agent\'s own tasks) or "backend" '
                           "(another service's URL)", field="port")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise Refused(422, f"expected a port from 1 to 65535, got {port!r}", field="port")
        return Backend(agent.backend.scheme, agent.backend.host, port)
    try:
        scheme, host, number = backend_address(backend)
    except ValueError as error:
        raise Refused(422, str(error), field="backend") from None
    if ip_address(host) is not None:
        raise Refused(403, "a backend must be a service name, not an address", field="backend")
    allowed = agent.registration.backends
    if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed):
        raise Refused(403, f"agent {agent.name} may not route to {host}: not among the "
                           "services its registration.backends allow", field="backend")
    return Backend(scheme, host, number)
