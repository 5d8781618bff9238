"""
One contract for every L{IAdminClient}: L{AdminClientContract} runs on the in-memory
L{FakeAdminClient} (which the CLI's tests believe in) and on L{HTTPAdminClient}
talking to a real admin listener in this process, over real sockets on loopback.

Each world has two agents: C{alpha} (on-demand, asleep) and C{steady} (always-on, ready).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from orchestrator.admin.client import (
    AdminClientError,
    AdminUnreachable,
    HTTPAdminClient,
    IAdminClient,
    Refused,
    Unauthorized,
    UnknownAgent,
)
from orchestrator.admin.memory import FakeAdmin, FakeAgent
from tests.admin.builders import TOKEN, make_admin
from tests.agents.world import ALWAYS_ON


def contract(test: Callable[[Any], Coroutine[Any, Any, None]]):
    @functools.wraps(test)
    def run(self):
        return self.run_contract(test(self))

    return run


class AdminClientContract(abc.ABC):
    """
    What every admin client does. A subclass provides C{make_client(token)}, a way to
    let the world's wake go on (C{settle}) and C{run_contract}.
    """

    @abc.abstractmethod
    def make_client(self, token: str | None = TOKEN) -> Any: ...

    @abc.abstractmethod
    def run_contract(self, coroutine): ...

    async def settle(self) -> None:
        """
        Let what the server does after answering happen (events on their way); the
        fake does it all at once.
        """
        return None

    async def failure(self, result: Deferred, kind: type) -> AdminClientError:
        try:
            await result
        except kind as error:
            return error
        raise AssertionError(f"expected {kind.__name__}")

    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(IAdminClient, self.make_client()))

    @contract
    async def test_agents_lists_every_agent_with_its_state(self):
        listing = await self.make_client().agents()
        self.assertEqual([(a["agent"], a["status"], a["policy"]) for a in listing["agents"]],
                         [("alpha", "sleeping", "on_demand"), ("steady", "ready", "always_on")])
        self.assertIn("last_event_id", listing)

    @contract
    async def test_one_agent_with_why_it_is_awake(self):
        view = await self.make_client().agent("steady")
        self.assertEqual((view["agent"], view["status"]), ("steady", "ready"))
        self.assertIn("always-on: Swarm keeps it running", view["awake"]["reasons"])
        for key in ("sleeps_at", "recent_wakes", "leases", "routes", "hosts"):
            self.assertIn(key, view)

    @contract
    async def test_an_unknown_agent(self):
        error = await self.failure(self.make_client().agent("nobody"), UnknownAgent)
        self.assertEqual((error.code, error.message), (404, "no agent named 'nobody'"))

    @contract
    async def test_a_wrong_token_is_unauthorized(self):
        error = await self.failure(self.make_client("wrong").agents(), Unauthorized)
        self.assertEqual(error.message, "a valid admin token is required")

    @contract
    async def test_wake_with_wait_ends_ready_and_is_idempotent(self):
        client = self.make_client()
        view = await client.wake("alpha", wait=30)
        self.assertEqual(view["status"], "ready")
        again = await client.wake("alpha")
        self.assertEqual(again["status"], "ready")

    @contract
    async def test_wake_without_wait_is_under_way_or_done(self):
        view = await self.make_client().wake("alpha")
        self.assertIn(view["status"], ("starting", "ready"))

    @contract
    async def test_always_on_agents_refuse_wake_and_sleep(self):
        client = self.make_client()
        woken = await self.failure(client.wake("steady"), Refused)
        self.assertIn("always-on", woken.message)
        slept = await self.failure(client.sleep("steady"), Refused)
        self.assertIn("cannot be put to sleep", slept.message)

    @contract
    async def test_sleep_after_a_wake(self):
        client = self.make_client()
        await client.wake("alpha", wait=30)
        view = await client.sleep("alpha", wait=30)
        self.assertEqual(view["status"], "sleeping")
        self.assertEqual((await client.sleep("alpha"))["status"], "sleeping")

    @contract
    async def test_events_holds_a_wake_in_order(self):
        client = self.make_client()
        await client.wake("alpha", wait=30)
        await self.settle()
        listing = await client.events()
        mine = [e["event"] for e in listing["events"] if e["agent"] == "alpha"]
        self.assertEqual(mine[-2:], ["agent.wake", "agent.ready"])
        self.assertEqual(listing["last_event_id"], listing["events"][-1]["id"])

    @contract
    async def test_follow_delivers_new_events(self):
        client = self.make_client()
        received: list[dict] = []
        following = await client.follow(received.append)
        await client.wake("alpha", wait=30)
        await self.eventually(lambda: [e["event"] for e in received if e["agent"] == "alpha"]
                              == ["agent.wake", "agent.ready"], received)
        self.assertEqual(following.last_event_id, received[-1]["id"])
        following.stop()
        await following.ended

    @contract
    async def test_follow_from_an_id_resumes_after_it(self):
        client = self.make_client()
        await client.wake("alpha", wait=30)
        await client.sleep("alpha", wait=30)
        await self.settle()
        events = (await client.events())["events"]
        wake_id = [e["id"] for e in events if e["event"] == "agent.wake"][-1]
        received: list[dict] = []
        following = await client.follow(received.append, last_event_id=wake_id)
        await self.eventually(lambda: [e["event"] for e in received if e["agent"] == "alpha"]
                              == ["agent.ready", "agent.sleep"], received)
        following.stop()
        await following.ended

    @contract
    async def test_config_redacts_the_token(self):
        shown = await self.make_client().config()
        self.assertEqual(shown["admin"]["token"], "<redacted>")
        self.assertEqual(shown["agents"]["steady"]["policy"], "always_on")

    async def eventually(self, check: Callable[[], bool], about: object) -> None:
        for _ in range(200):
            if check():
                return
            await self.settle()
        raise AssertionError(f"not so: {about}")


class FakeAdminClientContractTests(AdminClientContract, unittest.SynchronousTestCase):
    def setUp(self):
        self.admin = FakeAdmin([FakeAgent("alpha"),
                                FakeAgent("steady", policy="always_on", status="ready")],
                               clock=Clock(), token=TOKEN)

    def make_client(self, token=TOKEN):
        return self.admin.client(token)

    def run_contract(self, coroutine):
        self.successResultOf(Deferred.fromCoroutine(coroutine))


class HTTPAdminClientContractTests(AdminClientContract, unittest.TestCase):
    """
    Against the real admin app, on a real listener on 127.0.0.1; its agents run on a
    fake Swarm (whose wakes complete at once).
    """

    def setUp(self):
        self.world = make_admin(("alpha", {}), ("steady", ALWAYS_ON), token=TOKEN)
        site = Site(self.world.app.resource(), reactor=reactor)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.world.stream.close)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def make_client(self, token=TOKEN):
        import treq.client

        http = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        return HTTPAdminClient(self.url, token, http=http)

    def run_contract(self, coroutine):
        return Deferred.fromCoroutine(coroutine)

    async def settle(self) -> None:
        await deferLater(reactor, 0.01, lambda: None)

    @contract
    async def test_nothing_listening_is_unreachable(self):
        port = self.port.getHost().port
        await self.port.stopListening()
        client = HTTPAdminClient(f"http://127.0.0.1:{port}", TOKEN, http=self.make_client()._http)
        error = await self.failure(client.agents(), AdminUnreachable)
        self.assertIn(f"cannot reach the admin API at http://127.0.0.1:{port}", error.message)
