"""
What the agents' API does with a request, apart from HTTP: who calls (L{identity}),
what it may do (L{orchestrator.policy.registration}, L{orchestrator.policy.leases}),
and the answer, as a L{Reply} the listener's resource renders.

    GET    /api/agent             the caller: its name, state, hosts, routes and leases
    GET    /api/services          the caller's registered routes
    POST   /api/services          {"host": H, "port": P} or {"host": H, "backend": URL}
    DELETE /api/services/HOST     remove one of the caller's routes
    GET    /api/lease             the caller's busy leases
    POST   /api/lease             {"seconds": S, "reason": R}: a new lease
    POST   /api/lease/ID          {"seconds": S}: renew it (never shortening it)
    DELETE /api/lease/ID          release it
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from orchestrator.agentapi.identity import (
    Identifier,
    Identity,
    IdentityUnavailable,
    RequestBudget,
    Unauthenticated,
)
from orchestrator.agents.registry import AgentRegistry, Route, UnknownRoute
from orchestrator.agents.runtime import Agent
from orchestrator.config.hosts import parse_registered_host
from orchestrator.events.bus import EventBus
from orchestrator.policy.leases import LeaseError, TooManyLeases, UnknownLease
from orchestrator.policy.registration import Refused, route_backend
from orchestrator.status import Lease

#: Seconds between two C{route.refused} events of one agent: a misbehaving agent cannot
#: flood the consumers (the next event says how many were not reported).
REFUSAL_EVENT_INTERVAL = 10.0
#: The longest lease reason kept.
MAX_REASON = 200


@attrs.frozen
class Reply:
    code: int
    body: dict[str, Any]
    headers: tuple[tuple[bytes, bytes], ...] = ()


class _Refusal(Exception):
    def __init__(self, code: int, message: str, field: str | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.reply = Reply(code, {"error": message, **({"field": field} if field else {})},
                           headers)


def _allow(*methods: bytes) -> _Refusal:
    listed = b", ".join(methods)
    return _Refusal(405, f"use {listed.decode()} here", headers=((b"Allow", listed),))


class AgentApi:
    """
    The agents' API over the registry.

    @param max_body: the largest request body read (the resource stops reading beyond).
    """

    def __init__(self, registry: AgentRegistry, identifier: Identifier, budget: RequestBudget,
                 *, bus: EventBus, clock, max_body: int) -> None:
        self._registry = registry
        self._identifier = identifier
        self._budget = budget
        self._bus = bus
        self._clock = clock
        self.max_body = max_body
        self._refusals: dict[str, tuple[float, int]] = {}

    async def handle(self, method: bytes, path: bytes, *, authorization: list[bytes] | None,
                     body: bytes | None, peer: str, local: str) -> Reply:
        """
        Answer one request. C{body} is C{None} when it was larger than C{max_body}.
        """
        identity = None
        try:
            wait = self._budget.take(peer)
            if wait is not None:
                raise _Refusal(429, "too many requests from this address",
                               headers=((b"Retry-After", b"%d" % math.ceil(wait)),))
            action = self._route(method, [part for part in path.split(b"/") if part])
            identity = await self._identify(authorization, peer, local)
            return action(identity.agent, _document(body, method))
        except _Refusal as refusal:
            reply = refusal.reply
        except Refused as refused:
            reply = _Refusal(refused.code, refused.reason, refused.field).reply
        if identity is not None:
            self._tell_refused(identity.agent, reply)
        return reply

    # Routing ---------------------------------------------------------------------------

    def _route(self, method: bytes, parts: list[bytes]):
        if parts[:1] != [b"api"] or len(parts) > 3:
            raise _Refusal(404, "no such endpoint of the agents' API")
        resource, rest = parts[1:2], parts[2:]
        if resource == [b"agent"] and not rest:
            if method not in (b"GET", b"HEAD"):
                raise _allow(b"GET")
            return self._whoami
        if resource == [b"services"]:
            if not rest:
                return {b"GET": self._list_routes, b"HEAD": self._list_routes,
                        b"POST": self._register}.get(method) or _raise(_allow(b"GET", b"POST"))
            if method != b"DELETE":
                raise _allow(b"DELETE")
            host = _text(rest[0], "host")
            return lambda agent, document: self._unregister(agent, host)
        if resource == [b"lease"]:
            if not rest:
                return {b"GET": self._list_leases, b"HEAD": self._list_leases,
                        b"POST": self._acquire}.get(method) or _raise(_allow(b"GET", b"POST"))
            lease_id = _text(rest[0], "lease")
            if method == b"POST":
                return lambda agent, document: self._renew(agent, lease_id, document)
            if method == b"DELETE":
                return lambda agent, document: self._release(agent, lease_id)
            raise _allow(b"POST", b"DELETE")
        raise _Refusal(404, "no such endpoint of the agents' API")

    async def _identify(self, authorization, peer: str, local: str) -> Identity:
        try:
            return await self._identifier.identify(authorization=authorization, peer=peer,
                                                   local=local)
        except Unauthenticated as error:
            raise _Refusal(401, str(error), headers=(
                (b"WWW-Authenticate", b'Bearer realm="orchestrator agents"'),)) from None
        except IdentityUnavailable as error:
            raise _Refusal(503, str(error), headers=((b"Retry-After", b"5"),)) from None

    # The caller ------------------------------------------------------------------------

    def _whoami(self, agent: Agent, document: dict) -> Reply:
        status = agent.status()
        return Reply(200, {"agent": agent.name, "state": status.state.value,
                           "hosts": list(agent.config.hosts),
                           "routes": [_route(r) for r in self._registry.registered(agent.name)],
                           "leases": [_lease(lease) for lease in status.leases]})

    # Routes ----------------------------------------------------------------------------

    def _list_routes(self, agent: Agent, document: dict) -> Reply:
        return Reply(200, {"agent": agent.name, "services": [
            _route(route) for route in self._registry.registered(agent.name)]})

    def _register(self, agent: Agent, document: dict) -> Reply:
        _only(document, "host", "port", "backend")
        try:
            host = parse_registered_host(document.get("host"))
        except ValueError as error:
            raise _Refusal(422, str(error), "host") from None
        backend = route_backend(agent.config, port=document.get("port"),
                                backend=document.get("backend"))
        replaced = any(route.host == host for route in self._registry.registered(agent.name))
        route = self._registry.register(agent.name, host, backend, self._clock.seconds())
        return Reply(200 if replaced else 201, _route(route))

    def _unregister(self, agent: Agent, host: str) -> Reply:
        try:
            route = self._registry.unregister(agent.name, parse_registered_host(host))
        except (UnknownRoute, ValueError):
            raise _Refusal(404, f"agent {agent.name} has no route for {host}", "host") from None
        return Reply(200, {"removed": route.host})

    # Leases ----------------------------------------------------------------------------

    def _list_leases(self, agent: Agent, document: dict) -> Reply:
        return Reply(200, {"agent": agent.name,
                           "leases": [_lease(lease) for lease in agent.leases.leases]})

    def _acquire(self, agent: Agent, document: dict) -> Reply:
        _only(document, "seconds", "reason")
        seconds = _seconds(document)
        reason = document.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise _Refusal(422, f"expected a reason of at most {MAX_REASON} characters",
                           "reason")
        try:
            lease = agent.leases.acquire(seconds=seconds, reason=reason)
        except TooManyLeases as error:
            raise _Refusal(409, str(error)) from None
        except LeaseError as error:
            raise _Refusal(409, str(error)) from None
        return Reply(201, _lease(lease))

    def _renew(self, agent: Agent, lease_id: str, document: dict) -> Reply:
        _only(document, "seconds")
        seconds = _seconds(document)
        try:
            lease = agent.leases.renew(lease_id, seconds=seconds)
        except UnknownLease:
            raise self._foreign_or_unknown(agent, lease_id) from None
        return Reply(200, _lease(lease))

    def _release(self, agent: Agent, lease_id: str) -> Reply:
        try:
            lease = agent.leases.release(lease_id)
        except UnknownLease:
            raise self._foreign_or_unknown(agent, lease_id) from None
        return Reply(200, {"released": lease.id})

    def _foreign_or_unknown(self, agent: Agent, lease_id: str) -> _Refusal:
        for other in self._registry.values():
            if other is not agent and any(lease.id == lease_id for lease in other.leases.leases):
                return _Refusal(403, f"lease {lease_id} is not agent {agent.name}'s", "lease")
        return _Refusal(404, f"agent {agent.name} holds no lease {lease_id}", "lease")

    # Telling of refusals ---------------------------------------------------------------

    def _tell_refused(self, agent: Agent, reply: Reply) -> None:
        now = self._clock.seconds()
        told, suppressed = self._refusals.get(agent.name, (-math.inf, 0))
        if now - told < REFUSAL_EVENT_INTERVAL:
            self._refusals[agent.name] = (told, suppressed + 1)
            return
        self._refusals[agent.name] = (now, 0)
        self._bus.emit("route.refused", agent.name, code=reply.code,
                       reason=reply.body["error"], field=reply.body.get("field"),
                       suppressed=suppressed)


def _raise(error: Exception):
    raise error


def _document(body: bytes | None, method: bytes) -> dict:
    if method not in (b"POST",):
        return {}
    if body is None:
        raise _Refusal(413, "the request body is too large")
    if not body.strip():
        return {}
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _Refusal(400, f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise _Refusal(400, "the body must be a JSON object")
    return document


def _only(document: dict, *known: str) -> None:
    for key in document:
        if key not in known:
            raise _Refusal(422, f"unknown field {key!r}; expected "
                                + ", ".join(repr(k) for k in known), str(key))


def _seconds(document: dict) -> float:
    seconds = document.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
            math.isfinite(seconds) and seconds > 0):
        raise _Refusal(422, f"expected a number of seconds greater than 0, got {seconds!r}",
                       "seconds")
    return float(seconds)


def _text(part: bytes, field: str) -> str:
    try:
        return part.decode("ascii")
    except UnicodeDecodeError:
        raise _Refusal(404, f"no such {field}", field) from None


def _route(route: Route) -> dict[str, Any]:
    return {"host": route.host, "agent": route.agent.name, "backend": route.target.url,
            "registered_at": route.registered_at}


def _lease(lease: Lease) -> dict[str, Any]:
    return {"id": lease.id, "reason": lease.reason, "acquired": lease.acquired,
            "expires": lease.expires, "seconds": round(lease.expires - lease.acquired, 3)}
