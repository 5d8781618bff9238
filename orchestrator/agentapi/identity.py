"""
Who is calling the agents' API: an agent's own token, or the overlay address of one of
its running tasks, verified against Swarm's task list.

The address identity trusts what the network guarantees and nothing more (see
docs/agent-api.md): that the listener is reachable from the agents' overlay network
only (never published); that on that network an address is the task's Swarm gave it
(containers get no NET_ADMIN to change theirs, and a TCP connection cannot be opened
from a forged source address, since the handshake's answer goes to the real owner);
and that Swarm's task list is the truth about which task has which address, read at the
time of each request (so an address handed on to another task after the first one died
is judged by its new owner).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

import attrs

from orchestrator.agents.registry import AgentRegistry
from orchestrator.agents.runtime import Agent
from orchestrator.http.auth import bearer_token, token_is
from orchestrator.swarm.values import SwarmError


class Unauthenticated(Exception):
    """
    The caller is no agent we know (401); the message says what would identify it.
    """


class IdentityUnavailable(Exception):
    """
    The caller's address cannot be checked now (Swarm is unreachable): 503.
    """


@attrs.frozen
class Identity:
    agent: Agent = attrs.field(eq=False)
    #: How it was known: C{token} or C{address}.
    by: str


def same_network(interface: str, address: str) -> bool:
    """
    Whether C{address} (the listener's end of the connection) is on the network of
    C{interface} (the task's address with its prefix, C{10.0.1.5/24}).
    """
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_interface(interface).network
    except ValueError:
        return False


class Identifier:
    """
    Tells agents apart by their credentials.
    """

    def __init__(self, registry: AgentRegistry, swarm) -> None:
        self._registry = registry
        self._swarm = swarm

    async def identify(self, *, authorization: list[bytes] | None, peer: str,
                       local: str) -> Identity:
        """
        The agent calling, from its token (C{Authorization: Bearer}) when it sends one,
        else from the address it calls from (C{peer}) on the network the listener's end
        (C{local}) is on.

        @raise Unauthenticated: if neither makes it an agent that accepts that identity.
        @raise IdentityUnavailable: if Swarm cannot be asked now.
        """
        if authorization:
            return self._by_token(bearer_token(authorization))
        return await self._by_address(peer, local)

    def _by_token(self, token: bytes | None) -> Identity:
        if token is None:
            raise Unauthenticated("expected Authorization: Bearer <the agent's token>")
        found = None
        # Every agent's token is compared, whichever matches, in constant time each.
        for agent in self._registry.values():
            if token_is(token, agent.config.token):
                found = agent
        if found is None:
            raise Unauthenticated("the token is no agent's")
        if "token" not in found.config.registration.identity:
            raise Unauthenticated(f"agent {found.name} does not accept its token as its identity")
        return Identity(found, "token")

    async def _by_address(self, peer: str, local: str) -> Identity:
        try:
            owner = await self._swarm.task_at(peer)
        except SwarmError as error:
            raise IdentityUnavailable(f"cannot check the caller's address: {error}") from None
        hint = "; or send the agent's token (Authorization: Bearer)"
        if owner is None or not same_network(owner.interface, local):
            raise Unauthenticated(f"no running task of an agent calls from {peer} on this "
                                  f"network{hint}")
        agents = [agent for agent in self._registry.values()
                  if agent.config.service == owner.service
                  and "address" in agent.config.registration.identity]
        if len(agents) != 1:
            why = ("its agent does not accept its address as its identity" if not agents
                   else f"{len(agents)} agents share the service {owner.service}")
            raise Unauthenticated(f"the task calling from {peer} cannot be told apart: "
                                  f"{why}{hint}")
        return Identity(agents[0], "address")


class RequestBudget:
    """
    How many requests each caller (an address) may make a minute: a token bucket per
    address, for at most C{tracked} addresses (the least recently seen forgotten).
    """

    def __init__(self, per_minute: int, clock, tracked: int = 4096) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._tracked = tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> float | None:
        """
        Spend one request of C{address}'s budget: C{None} if it may go ahead, else the
        seconds until it may try again.
        """
        now = self._clock.seconds()
        rate = self.per_minute / 60.0
        tokens, then = self._buckets.pop(address, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * rate)
        self._buckets[address] = (max(tokens - 1, 0.0), now) if tokens >= 1 else (tokens, now)
        while len(self._buckets) > self._tracked:
            self._buckets.popitem(last=False)
        return None if tokens >= 1 else (1 - tokens) / rate
