"""
The admin API, on its own listener (never exposed with the proxy port).

C{GET /healthz} is the orchestrator's own liveness (for Docker's HEALTHCHECK and
systemd); C{GET /api/agents} lists every agent's state; C{POST /api/agents/NAME/wake}
wakes one by hand.
"""

from __future__ import annotations

import hmac

from twisted.web.resource import Resource

from orchestrator.http.answers import Answer, json_answer


class AdminResource(Resource):
    """
    The root of the admin listener.
    """

    isLeaf = True

    def __init__(self, agents: dict, token: str | None = None, *, clock) -> None:
        """
        @param token: when set, required as C{Authorization: Bearer <token>} on every
            request but C{GET /healthz} (which health checks must reach without it).
        @param clock: for the answers' C{Date}.
        """
        super().__init__()
        self._agents = agents
        self._clock = clock
        self.set_token(token)

    def set_token(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    def render(self, request):
        return self._answer(request).apply(request, self._clock.seconds())

    def _answer(self, request) -> Answer:
        parts = [p for p in request.path.split(b"/") if p]
        method = request.method
        if parts == [b"healthz"] and method in (b"GET", b"HEAD"):
            return json_answer(200, {"status": "ok"})
        if self._expected is not None and not hmac.compare_digest(
                request.getHeader(b"authorization") or b"", self._expected):
            return json_answer(401, {"error": "a valid admin token is required"},
                               ((b"WWW-Authenticate", b'Bearer realm="orchestrator"'),))
        if parts == [b"api", b"agents"] and method in (b"GET", b"HEAD"):
            return json_answer(200, {"agents": [describe(a) for a in self._agents.values()]})
        if len(parts) >= 3 and parts[:2] == [b"api", b"agents"]:
            name = parts[2].decode("utf-8", "replace")
            agent = self._agents.get(name)
            if agent is None:
                return json_answer(404, {"error": f"no agent named {name!r}"})
            if len(parts) == 3 and method in (b"GET", b"HEAD"):
                return json_answer(200, describe(agent))
            if parts[3:] == [b"wake"]:
                if method != b"POST":
                    return json_answer(405, {"error": "use POST to wake an agent"},
                                       ((b"Allow", b"POST"),))
                if agent.config.policy.value != "on_demand":
                    return json_answer(409, {
                        "error": f"agent {name!r} is always-on: Swarm owns its lifecycle"})
                agent.wake(reason="admin")
                return json_answer(202, describe(agent))
        return json_answer(404, {"error": f"no such admin endpoint: {request.path.decode('latin-1')}"})


def describe(agent) -> dict:
    """
    An agent as the admin API shows it.
    """
    config = agent.config
    return {
        **agent.health(),
        "service": config.service,
        "policy": config.policy.value,
        "backend": config.backend.url,
        "hosts": list(config.hosts),
        "last_activity": agent.last_activity,
        "in_flight": agent.in_flight,
        "connections": len(agent.connections),
    }
