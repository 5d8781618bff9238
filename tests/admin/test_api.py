"""
The admin API: health of the orchestrator, the agents' states, manual wake, the token.
"""

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.admin.api import AdminResource
from orchestrator.config.model import Policy
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import make_agent

TOKEN = "s3cret-admin-token-0123"


class AdminTests(SynchronousTestCase):
    def setUp(self):
        self.fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        self.always_on = make_agent(name="steady", replicas=1, policy=Policy.ALWAYS_ON)
        agents = {"alpha": self.fixture.agent, "steady": self.always_on.agent}
        self.client = StubTreq(AdminResource(agents, clock=Clock()))
        self.guarded = StubTreq(AdminResource(agents, token=TOKEN, clock=Clock()))

    def call(self, method, path, client=None, **kwargs):
        client = client or self.client
        response = self.successResultOf(client.request(method, "http://admin" + path, **kwargs))
        return response.code, self.successResultOf(response.json())

    def test_healthz(self):
        self.assertEqual(self.call("GET", "/healthz"), (200, {"status": "ok"}))

    def test_lists_every_agent_with_its_state(self):
        code, body = self.call("GET", "/api/agents")
        self.assertEqual(code, 200)
        self.assertEqual([(a["agent"], a["status"], a["policy"]) for a in body["agents"]],
                         [("alpha", "sleeping", "on_demand"), ("steady", "ready", "always_on")])

    def test_one_agent(self):
        code, body = self.call("GET", "/api/agents/alpha")
        self.assertEqual((code, body["service"], body["hosts"]), (200, "alpha", ["alpha.example.com"]))

    def test_wake_scales_an_on_demand_agent(self):
        code, body = self.call("POST", "/api/agents/alpha/wake")
        self.assertEqual((code, body["status"]), (202, "starting"))
        self.assertEqual(self.fixture.swarm.scale_calls, [("alpha", 1)])

    def test_wake_must_be_a_post(self):
        self.assertEqual(self.call("GET", "/api/agents/alpha/wake")[0], 405)

    def test_always_on_agents_are_not_ours_to_wake(self):
        code, body = self.call("POST", "/api/agents/steady/wake")
        self.assertEqual(code, 409)
        self.assertIn("always-on", body["error"])

    def test_unknown_agent_and_endpoint_are_404(self):
        self.assertEqual(self.call("GET", "/api/agents/nobody"),
                         (404, {"error": "no agent named 'nobody'"}))
        self.assertEqual(self.call("GET", "/nothing")[0], 404)

    def test_with_a_token_requests_without_it_are_401(self):
        code, body = self.call("GET", "/api/agents", client=self.guarded)
        self.assertEqual((code, body), (401, {"error": "a valid admin token is required"}))
        code, _ = self.call("GET", "/api/agents", client=self.guarded,
                            headers={"Authorization": "Bearer wrong"})
        self.assertEqual(code, 401)

    def test_with_the_token_requests_pass(self):
        code, _ = self.call("GET", "/api/agents", client=self.guarded,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(code, 200)

    def test_healthz_needs_no_token(self):
        self.assertEqual(self.call("GET", "/healthz", client=self.guarded)[0], 200)
