"""
Registered routes and leases kept across a restart: the file's format, its atomic
writes, a damaged file set aside, and what is taken up (or dropped) once each agent's
state is found.
"""

from __future__ import annotations

import json
import os

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import succeed
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.state import (
    DamagedState,
    KeptRoute,
    KeptState,
    StateKeeper,
    decode,
    encode,
    read_or_set_aside,
    write_atomically,
)
from orchestrator.config.model import Backend
from orchestrator.states import AgentState
from orchestrator.status import Lease
from tests.agents.test_registry import PREVIEW, RegistryHarness


def synchronous(function, *args):
    function(*args)
    return succeed(None)


names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
routes = st.builds(KeptRoute, names, names.map(lambda n: n + ".example.com"),
                   st.builds(Backend, st.sampled_from(["http", "https"]), names,
                             st.integers(1, 65535)),
                   st.floats(0, 2e9))
leases = st.tuples(names, st.builds(Lease, names, st.text(max_size=20), st.floats(0, 2e9),
                                    st.floats(0, 2e9)))


class FileTests(SynchronousTestCase):
    @given(st.builds(KeptState, st.tuples(routes), st.lists(leases, max_size=3).map(tuple)))
    def test_what_is_written_is_read_back(self, state):
        self.assertEqual(decode(encode(state)), state)

    def test_anything_else_is_damaged(self):
        for data in (b"", b"{", b"[]", b'{"version": 2, "routes": [], "leases": []}',
                     b'{"version": 1, "routes": [{"agent": "a"}], "leases": []}',
                     b'{"version": 1, "routes": [], "leases": [{"id": 1}]}', b"\xff"):
            with self.subTest(data=data):
                self.assertRaises(DamagedState, decode, data)

    def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(self):
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "state.json")
        write_atomically(path, b"first")
        write_atomically(path, b"second")
        self.assertEqual(os.listdir(directory), ["state.json"])
        with open(path, "rb") as file:
            self.assertEqual(file.read(), b"second")

    def test_a_damaged_file_is_set_aside_reported_and_ignored(self):
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "state.json")
        with open(path, "w") as file:
            file.write("{not json")
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.assertEqual(read_or_set_aside(path, now=1234.5), KeptState())
        self.assertEqual(os.listdir(directory), ["state.json.damaged-1234"])
        self.assertTrue(any(event.get("event") == "state.damaged" for event in logged))

    def test_no_file_is_no_state(self):
        self.assertEqual(read_or_set_aside(self.mktemp(), now=0), KeptState())


@attrs.frozen
class RegistryView:
    registry: object
    clock: object


class KeeperTests(SynchronousTestCase):
    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "state.json")

    def keeper(self, harness):
        keeper = StateKeeper(harness.registry, self.path, harness.clock, run=synchronous)
        self.addCleanup(keeper.stopService)
        keeper.startService()
        return keeper

    def kept(self):
        with open(self.path, "rb") as file:
            return decode(file.read())

    def test_every_change_is_written(self):
        harness = RegistryHarness()
        self.keeper(harness)
        harness.register()
        lease = harness.registry["alpha"].leases.acquire(seconds=600, reason="tool call")
        state = self.kept()
        self.assertEqual([(r.agent, r.host, r.backend.port) for r in state.routes],
                         [("alpha", PREVIEW, 3000)])
        self.assertEqual(state.leases, (("alpha", lease),))

    def test_a_restart_takes_up_the_routes_and_leases_of_an_agent_found_awake(self):
        harness = RegistryHarness()
        self.keeper(harness)
        harness.register()
        lease = harness.registry["alpha"].leases.acquire(seconds=600, reason="tool call")
        again = self.restart(harness)
        agent = again.registry["alpha"]
        self.assertEqual(again.registry.route(PREVIEW).backend.port, 3000)
        self.assertEqual(tuple(agent.leases.leases), (lease,))

    def restart(self, harness):
        """
        A new registry on the same Swarm (the agents' services as they are), its keeper
        reading the file before the agents reconcile.
        """
        return RegistryHarness(after=harness, before_start=lambda registry: self.keeper(
            RegistryView(registry, harness.clock)))

    def test_what_an_agent_found_asleep_held_is_dropped(self):
        harness = RegistryHarness()
        self.keeper(harness)
        harness.register()
        harness.registry["alpha"].leases.acquire(seconds=600, reason="")
        harness.swarm.scale("alpha", 0)  # it went to sleep while we were down
        again = self.restart(harness)
        self.assertIs(again.registry["alpha"].state, AgentState.SLEEPING)
        self.assertEqual(again.registry.registered(), ())
        self.assertEqual(self.kept(), KeptState())

    def test_what_an_agent_no_longer_configured_held_is_dropped(self):
        with open(self.path, "wb") as file:
            file.write(json.dumps({"version": 1, "leases": [], "routes": [
                {"agent": "gone", "host": "x.gone.example.com",
                 "backend": "http://tasks.gone:80", "registered_at": 1}]}).encode())
        harness = RegistryHarness()
        keeper = self.keeper(harness)
        self.assertEqual(keeper.snapshot(), KeptState())
