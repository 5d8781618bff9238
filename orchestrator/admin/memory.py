"""
An in-memory admin API for the command-line client's tests: L{FakeAdmin} is the server
side (agents, their states, the events), L{FakeAdmin.client} the L{IAdminClient} a test
hands the CLI. The same contract suite runs against it and against L{HTTPAdminClient}
talking to a real admin listener, so the CLI's tests believe nothing the real API
does not do.

Like the real API: a wake is one-at-a-time and idempotent, always-on agents refuse
wake and sleep, events get ids and can be followed from one. Unlike it, time does not
pass by itself: a wake in progress moves one phase each time the agent is looked at
(C{phases}), and a wake waited for completes at once (or fails, with C{fails_with}).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from orchestrator.admin.client import (
    AgentDegraded,
    Following,
    IAdminClient,
    Refused,
    Unauthorized,
    UnknownAgent,
)

#: The phases of a wake, as the real agents report them.
WAKE_PHASES = ("queued", "scheduling", "probing")


@attrs.define
class FakeAgent:
    """
    One agent of the fake admin API.
    """

    name: str
    policy: str = "on_demand"
    status: str = "sleeping"
    reason: str | None = None
    phase: str | None = None
    #: The phases a wake goes through, one per look.
    phases: tuple[str, ...] = WAKE_PHASES
    #: Set: the next wake fails with this reason.
    fails_with: str | None = None
    recent_wakes: list = attrs.Factory(list)
    _phase_index: int = 0


class FakeAdmin:
    """
    The server side: agents by name, the events, the token.
    """

    def __init__(self, agents: list[FakeAgent], *, clock, token: str | None = None) -> None:
        self.agents = {agent.name: agent for agent in agents}
        self.clock = clock
        self.token = token
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._followers: list[Callable[[dict], None]] = []

    def client(self, token: str | None = None) -> FakeAdminClient:
        return FakeAdminClient(self, token)

    def emit(self, event_type: str, agent: str | None, **fields) -> None:
        event = {**fields, "event": event_type, "agent": agent, "time": self.clock.seconds(),
                 "id": f"fake.{next(self._ids)}"}
        self.events.append(event)
        for deliver in list(self._followers):
            deliver(event)

    def view(self, agent: FakeAgent) -> dict[str, Any]:
        body: dict[str, Any] = {"status": agent.status, "agent": agent.name}
        if agent.reason is not None:
            body["reason"] = agent.reason
        if agent.status == "starting" and agent.phase is not None:
            body["phase"] = agent.phase
        awake = None if agent.status == "sleeping" else {
            "in_flight": 0, "websockets": 0, "websockets_with_recent_frames": 0,
            "leases": 0, "last_activity": self.clock.seconds(), "idle_seconds": 0.0,
            "reasons": ["always-on: Swarm keeps it running"] if agent.policy == "always_on"
            else ["last activity 0s ago (idle timeout 900s)"]}
        return {**body, "service": agent.name, "policy": agent.policy, "origin": "config",
                "backend": f"http://tasks.{agent.name}:8080", "hosts": [f"{agent.name}.test"],
                "routes": [], "leases": [], "since": self.clock.seconds(),
                "last_activity": self.clock.seconds(), "in_flight": 0, "connections": 0,
                "held": 0, "idle_timeout": 900.0, "sleeps_at": None, "sleeps_in": None,
                "awake": awake, "recent_wakes": list(agent.recent_wakes),
                "last_wake": agent.recent_wakes[-1] if agent.recent_wakes else None,
                "time": self.clock.seconds()}

    # What the API does ----------------------------------------------------------------

    def look(self, agent: FakeAgent) -> None:
        """
        Time passes for a wake in progress: its next phase, or the end of it.
        """
        if agent.status != "starting":
            return
        if agent._phase_index < len(agent.phases):
            agent.phase = agent.phases[agent._phase_index]
            agent._phase_index += 1
        else:
            self.finish_wake(agent)

    def start_wake(self, agent: FakeAgent) -> None:
        if agent.status in ("ready", "starting"):
            return
        previous, agent.status, agent.reason = agent.status, "starting", None
        agent._phase_index, agent.phase = 0, None
        self.emit("agent.wake", agent.name, previous=previous, state="starting",
                  reason="admin")
        self.look(agent)

    def finish_wake(self, agent: FakeAgent) -> None:
        agent.phase = None
        phases = {phase: 0.3 for phase in agent.phases}
        agent.recent_wakes.append({"started": self.clock.seconds() - 1.0, "seconds": 1.0,
                                   "phases": phases,
                                   "succeeded": agent.fails_with is None})
        if agent.fails_with is not None:
            agent.status, agent.reason = "degraded", agent.fails_with
            self.emit("agent.degraded", agent.name, previous="starting", state="degraded",
                      reason=agent.fails_with)
            return
        agent.status = "ready"
        self.emit("agent.ready", agent.name, previous="starting", state="ready",
                  wake_seconds=1.0, phases=phases)

    def put_to_sleep(self, agent: FakeAgent) -> None:
        if agent.status == "sleeping":
            return
        previous, agent.status, agent.reason = agent.status, "sleeping", None
        self.emit("agent.sleep", agent.name, previous=previous, state="sleeping",
                  reason="admin")


@implementer(IAdminClient)
class FakeAdminClient:
    """
    L{IAdminClient} on a L{FakeAdmin}.
    """

    def __init__(self, admin: FakeAdmin, token: str | None) -> None:
        self._admin = admin
        self._token = token
        self.url = "fake:"

    def _check(self, name: str | None = None):
        admin = self._admin
        if admin.token is not None and self._token != admin.token:
            raise Unauthorized("a valid admin token is required")
        if name is None:
            return None
        agent = admin.agents.get(name)
        if agent is None:
            raise UnknownAgent(f"no agent named {name!r}")
        return agent

    def _answer(self, work: Callable[[], Any]) -> Deferred:
        try:
            return succeed(work())
        except Exception:
            return fail()

    def agents(self) -> Deferred:
        def work():
            self._check()
            for agent in self._admin.agents.values():
                self._admin.look(agent)
            events = self._admin.events
            return {"agents": [self._admin.view(a) for a in self._admin.agents.values()],
                    "last_event_id": events[-1]["id"] if events else None,
                    "time": self._admin.clock.seconds()}
        return self._answer(work)

    def agent(self, name: str) -> Deferred:
        def work():
            agent = self._check(name)
            self._admin.look(agent)
            return self._admin.view(agent)
        return self._answer(work)

    def wake(self, name: str, wait: float | None = None) -> Deferred:
        def work():
            agent = self._check(name)
            admin = self._admin
            if agent.policy != "on_demand":
                raise Refused(f"agent {name!r} is always-on: Swarm owns its lifecycle, so "
                              "it cannot be woken", admin.view(agent))
            admin.start_wake(agent)
            if wait and agent.status == "starting":
                admin.finish_wake(agent)
                if agent.status == "degraded":
                    raise AgentDegraded(f"agent {name!r} is degraded: {agent.reason}",
                                        admin.view(agent))
            return admin.view(agent)
        return self._answer(work)

    def sleep(self, name: str, wait: float | None = None) -> Deferred:
        def work():
            agent = self._check(name)
            if agent.policy != "on_demand":
                raise Refused(f"agent {name!r} is always-on: Swarm owns its lifecycle, so "
                              "it cannot be put to sleep", self._admin.view(agent))
            self._admin.put_to_sleep(agent)
            return self._admin.view(agent)
        return self._answer(work)

    def events(self) -> Deferred:
        def work():
            self._check()
            events = self._admin.events
            return {"events": list(events),
                    "last_event_id": events[-1]["id"] if events else None}
        return self._answer(work)

    def config(self) -> Deferred:
        def work():
            self._check()
            return {"admin": {"token": None if self._admin.token is None else "<redacted>"},
                    "agents": {name: {"policy": agent.policy}
                               for name, agent in self._admin.agents.items()}}
        return self._answer(work)

    def follow(self, deliver: Callable[[dict], None],
               last_event_id: str | None = None) -> Deferred:
        def work():
            self._check()
            admin = self._admin
            following = Following(ended=Deferred(), stop=lambda: None,
                                  last_event_id=last_event_id)

            def delivered(event: dict) -> None:
                following.last_event_id = event["id"]
                deliver(event)

            if last_event_id is not None:
                ids = [event["id"] for event in admin.events]
                replay = admin.events[ids.index(last_event_id) + 1:] \
                    if last_event_id in ids else admin.events
                for event in replay:
                    delivered(event)
            admin._followers.append(delivered)

            def stop() -> None:
                if delivered in admin._followers:
                    admin._followers.remove(delivered)
                if not following.ended.called:
                    following.ended.callback(None)

            following.stop = stop
            return following
        return self._answer(work)
