"""
One contract for every L{ISwarm}: L{SwarmContractTests} runs on L{FakeSwarm}
(synchronously, in memory) and on L{DockerSwarm} against the real engine, so the fake
that every other unit test believes in is checked against the real Swarm.

Below the contract: L{DockerSwarm}'s own behaviour (error mapping, retries, lifecycle),
tested with a synchronous thread pool and the real Docker SDK talking to a missing
socket or to a scripted engine on a Unix socket; and L{FakeSwarm}'s test controls.
"""

from __future__ import annotations

import abc
import functools
import json
import os
import queue
import re
import secrets
import socketserver
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from copy import deepcopy
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from orchestrator.swarm.docker import WATCHED_EVENTS, DockerSwarm
from orchestrator.swarm.memory import FakeSwarm
from orchestrator.swarm.values import (
    ISwarm,
    ISwarmEvents,
    ServiceStatus,
    SwarmError,
    SwarmEvent,
    SwarmUnavailable,
    TaskOwner,
    TaskStatus,
    UnknownService,
)
from tests.integration import engine

_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseException)

MiB = 1024 * 1024

#: An image that exists nowhere (and no registry is asked here).
MISSING_IMAGE = "orchtest/no-such-image:latest"
#: A Docker URL where no engine answers.
MISSING_SOCKET = "unix:///nonexistent/orchestrator-test/docker.sock"


def contract(test: Callable[[Any], Coroutine[Any, Any, None]]):
    """
    Turn an C{async def} contract test into a test method; the implementation's
    C{run_contract} decides whether it may wait.
    """

    @functools.wraps(test)
    def run(self):
        return self.run_contract(test(self))

    return run


class SwarmContractTests(abc.ABC):
    """
    What every L{ISwarm} does. A subclass provides C{self.swarm} (in C{setUp}) and:

      - C{make_service(name, replicas, labels, image)}: create a service the way
        C{docker service create} would (C{replicas=None}: global), removed after the test;
      - C{eventually(check)}: await C{check()} until it stops raising C{AssertionError};
        the fake allows one try only, the real engine gets a bounded deadline;
      - C{unreachable_swarm()}: the same implementation, with no engine behind it;
      - C{run_contract(coroutine)}: run one test body.
    """

    swarm: Any

    @abc.abstractmethod
    def make_service(self, name: str, replicas: int | None = 0,
                     labels: dict[str, str] | None = None,
                     image: str = engine.TEST_IMAGE, *, memory_reservation: int = 0,
                     memory_limit: int = 0) -> None:
        ...

    @abc.abstractmethod
    async def eventually(self, check: Callable[[], Awaitable[_T]]) -> _T:
        ...

    @abc.abstractmethod
    def unreachable_swarm(self) -> Any:
        ...

    @abc.abstractmethod
    def make_networked_service(self, name: str) -> None:
        """
        Create a one-replica service on an overlay network, as the agents are; removed
        after the test.
        """
        ...

    @abc.abstractmethod
    def kill_tasks(self, name: str) -> None:
        """
        Kill the container of every running task of C{name}, as C{docker kill} does.
        """
        ...

    @abc.abstractmethod
    def make_crashing_service(self, name: str, max_attempts: int) -> None:
        """
        Create a one-replica service whose command exits at once with status 1, with
        the restart policy C{on-failure} and C{max_attempts}; removed after the test.
        """
        ...

    @abc.abstractmethod
    def remove_service(self, name: str) -> None:
        ...

    @abc.abstractmethod
    def force_update(self, name: str) -> None:
        """
        Replace the tasks of C{name}, as C{docker service update --force} does.
        """

    @abc.abstractmethod
    def run_contract(self, coroutine: Coroutine[Any, Any, None]):
        ...

    # Helpers ---------------------------------------------------------------------------

    async def assert_fails(self, result: Deferred[Any], exception_type: type[_E]) -> _E:
        try:
            value = await result
        except exception_type as error:
            return error
        self.fail(f"expected {exception_type.__name__}, got the result {value!r}")

    def new_service(self, prefix: str, replicas: int | None = 0,
                    labels: dict[str, str] | None = None,
                    image: str = engine.TEST_IMAGE, **resources: int) -> str:
        name = engine.unique_name(prefix)
        self.make_service(name, replicas, labels, image, **resources)
        return name

    async def running_tasks(self, name: str, count: int) -> ServiceStatus:
        status = await self.swarm.status(name)
        self.assertEqual(len(status.running_tasks), count, status)
        return status

    async def subscribe(self) -> tuple[list[SwarmEvent], Any]:
        """
        Subscribe to the events; return the list they are appended to and the
        subscription (stopped after the test).
        """
        received: list[SwarmEvent] = []
        subscription = await self.swarm.events(received.append)
        self.addCleanup(subscription.stop)
        return received, subscription

    def events_of(self, received: list[SwarmEvent], name: str, kind: str,
                  action: str) -> list[SwarmEvent]:
        return [event for event in received
                if (event.service, event.kind, event.action) == (name, kind, action)]

    # The contract ---------------------------------------------------------------------

    def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(ISwarm, self.swarm))

    @contract
    async def test_status_of_a_missing_service_fails_with_unknown_service(self) -> None:
        name = engine.unique_name("missing")
        error = await self.assert_fails(self.swarm.status(name), UnknownService)
        self.assertEqual(error.service, name)

    @contract
    async def test_scale_of_a_missing_service_fails_with_unknown_service(self) -> None:
        name = engine.unique_name("missing")
        error = await self.assert_fails(self.swarm.scale(name, 1), UnknownService)
        self.assertEqual(error.service, name)

    @contract
    async def test_calls_are_counted_by_kind_and_failures_apart(self) -> None:
        name = self.new_service("counted", replicas=0)
        calls, errors = dict(self.swarm.counts.calls), dict(self.swarm.counts.errors)
        await self.swarm.status(name)
        await self.assert_fails(self.swarm.scale(engine.unique_name("missing"), 1),
                                UnknownService)
        counts = self.swarm.counts
        self.assertEqual((counts.calls["status"] - calls.get("status", 0),
                          counts.errors["status"] - errors.get("status", 0)), (1, 0))
        self.assertEqual((counts.calls["scale"] - calls.get("scale", 0),
                          counts.errors["scale"] - errors.get("scale", 0)), (1, 1))

    @contract
    async def test_unreachable_engine_counts_the_failed_call(self) -> None:
        swarm = self.unreachable_swarm()
        await self.assert_fails(swarm.discover("orchtest"), SwarmUnavailable)
        self.assertEqual((swarm.counts.calls["discover"], swarm.counts.errors["discover"]),
                         (1, 1))

    @contract
    async def test_new_service_with_zero_replicas_has_no_running_task(self) -> None:
        name = self.new_service("zero", replicas=0, labels={"orchtest.role": "agent"})
        status = await self.swarm.status(name)
        self.assertEqual(status.name, name)
        self.assertEqual(status.replicas, 0)
        self.assertEqual(status.running_tasks, ())
        self.assertEqual(status.labels.get("orchtest.role"), "agent")

    @contract
    async def test_global_service_has_no_replica_count(self) -> None:
        name = self.new_service("global", replicas=None)
        status = await self.swarm.status(name)
        self.assertIsNone(status.replicas)

    @contract
    async def test_scale_to_one_runs_one_task(self) -> None:
        name = self.new_service("up", replicas=0)
        self.assertIsNone(await self.swarm.scale(name, 1))
        status = await self.swarm.status(name)
        self.assertEqual(status.replicas, 1)
        await self.eventually(lambda: self.running_tasks(name, 1))

    @contract
    async def test_scale_back_to_zero_stops_the_task(self) -> None:
        name = self.new_service("down", replicas=0)
        await self.swarm.scale(name, 1)
        await self.eventually(lambda: self.running_tasks(name, 1))
        await self.swarm.scale(name, 0)
        self.assertEqual((await self.swarm.status(name)).replicas, 0)

        async def stopped() -> None:
            status = await self.running_tasks(name, 0)
            wanted = [task for task in status.tasks if task.desired_state == "running"]
            self.assertEqual(wanted, [])

        await self.eventually(stopped)

    @contract
    async def test_scale_to_the_current_replicas_leaves_the_task_running(self) -> None:
        name = self.new_service("same", replicas=1)
        before = await self.eventually(lambda: self.running_tasks(name, 1))
        await self.swarm.scale(name, 1)
        after = await self.swarm.status(name)
        self.assertEqual(after.running_tasks, before.running_tasks)

    @contract
    async def test_scale_keeps_the_labels(self) -> None:
        labels = {"orchtest.role": "agent", "orchtest.idle": "15m"}
        name = self.new_service("labels", replicas=0, labels=labels)
        await self.swarm.scale(name, 1)
        status = await self.swarm.status(name)
        self.assertLessEqual(labels.items(), status.labels.items())

    @contract
    async def test_scale_of_a_global_service_fails_with_swarm_error(self) -> None:
        name = self.new_service("global", replicas=None)
        error = await self.assert_fails(self.swarm.scale(name, 0), SwarmError)
        self.assertNotIsInstance(error, (UnknownService, SwarmUnavailable))
        self.assertIn("global", str(error))

    @contract
    async def test_discover_finds_labelled_services_only(self) -> None:
        label = f"orchtest.discover-{secrets.token_hex(3)}"
        labelled = self.new_service("labelled", replicas=0, labels={label: "yes"})
        self.new_service("unlabelled", replicas=0)
        found = await self.swarm.discover(label)
        self.assertEqual([status.name for status in found], [labelled])
        self.assertEqual(found[0].replicas, 0)
        self.assertEqual(found[0].labels.get(label), "yes")

    @contract
    async def test_discover_matches_any_value_of_the_label(self) -> None:
        label = f"orchtest.discover-{secrets.token_hex(3)}"
        first = self.new_service("first", replicas=0, labels={label: "a"})
        second = self.new_service("second", replicas=0, labels={label: ""})
        found = await self.swarm.discover(label)
        self.assertEqual(sorted(status.name for status in found), sorted([first, second]))

    @contract
    async def test_discover_reports_the_tasks(self) -> None:
        label = f"orchtest.discover-{secrets.token_hex(3)}"
        name = self.new_service("tasks", replicas=1, labels={label: "yes"})

        async def one_running() -> None:
            (found,) = await self.swarm.discover(label)
            self.assertEqual(found.name, name)
            self.assertEqual(len(found.running_tasks), 1)

        await self.eventually(one_running)

    @contract
    async def test_discover_without_matches_is_empty(self) -> None:
        found = await self.swarm.discover(f"orchtest.nothing-{secrets.token_hex(3)}")
        self.assertEqual(found, ())

    @contract
    async def test_status_reports_the_memory_each_task_reserves_and_may_use(self) -> None:
        name = self.new_service("memory", replicas=0, memory_reservation=64 * MiB,
                                memory_limit=128 * MiB)
        status = await self.swarm.status(name)
        self.assertEqual((status.memory_reservation, status.memory_limit),
                         (64 * MiB, 128 * MiB))

    @contract
    async def test_a_service_without_resources_reserves_nothing(self) -> None:
        status = await self.swarm.status(self.new_service("nomemory", replicas=0))
        self.assertEqual((status.memory_reservation, status.memory_limit), (0, 0))

    @contract
    async def test_statuses_have_every_service_as_its_own_status_reads_it(self) -> None:
        asleep = self.new_service("all", replicas=0, memory_reservation=32 * MiB)
        awake = self.new_service("all", replicas=1, labels={"orchtest.role": "agent"})
        await self.eventually(lambda: self.running_tasks(awake, 1))
        found = await self.swarm.statuses()
        for name in (asleep, awake):
            self.assertEqual(found[name], await self.swarm.status(name))
        self.assertEqual(len(found[awake].running_tasks), 1)

    @contract
    async def test_statuses_leave_out_a_removed_service(self) -> None:
        name = self.new_service("gone", replicas=0)
        self.remove_service(name)

        async def gone() -> None:
            self.assertNotIn(name, await self.swarm.statuses())

        await self.eventually(gone)

    @contract
    async def test_unreachable_engine_fails_statuses_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().statuses(), SwarmUnavailable)

    @contract
    async def test_statuses_of_named_services_have_those_only(self) -> None:
        wanted = self.new_service("named", replicas=1)
        other = self.new_service("named", replicas=0)
        missing = engine.unique_name("named")
        await self.eventually(lambda: self.running_tasks(wanted, 1))
        found = await self.swarm.statuses(services=[wanted, missing])
        self.assertEqual(list(found), [wanted])
        self.assertEqual(found[wanted], await self.swarm.status(wanted))
        self.assertNotIn(other, found)

    @contract
    async def test_statuses_of_no_service_are_empty(self) -> None:
        self.new_service("none", replicas=0)
        self.assertEqual(await self.swarm.statuses(services=[]), {})

    @contract
    async def test_statuses_of_a_name_prefix_leave_out_the_longer_names(self) -> None:
        # Docker's name filter matches prefixes: the exact names only are kept.
        short = self.new_service("prefix", replicas=0)
        self.make_service(f"{short}-longer", 0)
        found = await self.swarm.statuses(services=[short])
        self.assertEqual(list(found), [short])

    @contract
    async def test_the_swarm_has_this_node_ready_and_active(self) -> None:
        nodes = await self.swarm.nodes()
        self.assertGreaterEqual(len(nodes), 1)
        for node_id, node in nodes.items():
            self.assertEqual(node.id, node_id)
            self.assertTrue(node.hostname)
        self.assertTrue(any(node.state == "ready" and node.availability == "active"
                            and not node.gone for node in nodes.values()), nodes)

    @contract
    async def test_a_running_task_is_on_a_known_node(self) -> None:
        name = self.new_service("placed", replicas=1)
        [task] = (await self.eventually(lambda: self.running_tasks(name, 1))).running_tasks
        nodes = await self.swarm.nodes()
        self.assertIn(task.node_id, nodes)
        self.assertEqual(nodes[task.node_id].state, "ready")

    @contract
    async def test_one_node_is_the_engines_own(self) -> None:
        # On one node (the contract's engine and the fake's default), it runs the task.
        name = self.new_service("local", replicas=1)
        [task] = (await self.eventually(lambda: self.running_tasks(name, 1))).running_tasks
        nodes = await self.swarm.nodes()
        self.assertEqual([node.id for node in nodes.values() if node.local], [task.node_id])

    @contract
    async def test_unreachable_engine_fails_nodes_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().nodes(), SwarmUnavailable)

    @contract
    async def test_the_node_has_memory(self) -> None:
        memory = await self.swarm.node_memory()
        self.assertIsInstance(memory, int)
        self.assertGreater(memory, 256 * MiB)

    @contract
    async def test_unreachable_engine_fails_node_memory_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().node_memory(), SwarmUnavailable)

    @contract
    async def test_missing_image_makes_a_failed_task_naming_it(self) -> None:
        name = self.new_service("noimage", replicas=1, image=MISSING_IMAGE)

        async def failed() -> None:
            status = await self.swarm.status(name)
            failures = [task for task in status.tasks if task.failed]
            self.assertTrue(failures, status)
            self.assertIn(MISSING_IMAGE, failures[0].error)
            self.assertEqual(status.running_tasks, ())

        await self.eventually(failed)

    @contract
    async def test_unreachable_engine_fails_status_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().status("any"), SwarmUnavailable)

    @contract
    async def test_unreachable_engine_fails_scale_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().scale("any", 1), SwarmUnavailable)

    @contract
    async def test_unreachable_engine_fails_discover_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().discover("any"), SwarmUnavailable)

    @contract
    async def test_unreachable_engine_fails_task_at_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().task_at("10.0.9.2"), SwarmUnavailable)

    @contract
    async def test_a_running_task_is_found_by_its_address_on_its_network(self) -> None:
        name = engine.unique_name("address")
        self.make_networked_service(name)
        status = await self.eventually(lambda: self.running_tasks(name, 1))
        [task] = status.running_tasks
        [interface] = task.addresses
        address, _, prefix = interface.partition("/")
        self.assertTrue(prefix.isdigit(), interface)
        self.assertEqual(await self.swarm.task_at(address), TaskOwner(name, task.id, interface))

    @contract
    async def test_an_address_no_running_task_has_belongs_to_no_one(self) -> None:
        name = engine.unique_name("address")
        self.make_networked_service(name)
        [task] = (await self.eventually(lambda: self.running_tasks(name, 1))).running_tasks
        address = task.addresses[0].partition("/")[0]
        await self.swarm.scale(name, 0)

        async def gone() -> None:
            self.assertIsNone(await self.swarm.task_at(address))

        await self.eventually(gone)
        self.assertIsNone(await self.swarm.task_at("192.0.2.1"))

    @contract
    async def test_unreachable_engine_fails_events_with_swarm_unavailable(self) -> None:
        await self.assert_fails(self.unreachable_swarm().events(lambda event: None),
                                SwarmUnavailable)

    # Restart policy -------------------------------------------------------------------

    @contract
    async def test_new_service_has_swarms_default_restart_policy(self) -> None:
        name = self.new_service("restart", replicas=0)
        status = await self.swarm.status(name)
        self.assertEqual((status.restart_condition, status.max_attempts), ("any", 0))
        self.assertFalse(status.restarts_exhausted)

    @contract
    async def test_crashing_service_exhausts_its_restarts(self) -> None:
        name = engine.unique_name("crash")
        self.make_crashing_service(name, max_attempts=2)

        async def exhausted() -> ServiceStatus:
            status = await self.swarm.status(name)
            self.assertTrue(status.restarts_exhausted, status)
            return status

        status = await self.eventually(exhausted)
        self.assertEqual((status.restart_condition, status.max_attempts), ("on-failure", 2))
        # The first attempt and two restarts, all failed; nothing more is coming.
        self.assertEqual(status.failed_attempts, 3)
        self.assertEqual([task for task in status.tasks if task.live], [])
        self.assertIn("non-zero exit (1)", status.tasks[-1].error)

    @contract
    async def test_forced_update_of_an_exhausted_service_counts_afresh(self) -> None:
        name = engine.unique_name("crash")
        self.make_crashing_service(name, max_attempts=1)

        async def exhausted() -> ServiceStatus:
            status = await self.swarm.status(name)
            self.assertTrue(status.restarts_exhausted, status)
            return status

        before = await self.eventually(exhausted)
        self.force_update(name)

        async def exhausted_again() -> None:
            status = await exhausted()
            self.assertEqual(status.failed_attempts, 2)
            self.assertNotIn(status.tasks[-1].id, [task.id for task in before.tasks])

        await self.eventually(exhausted_again)

    # Events ---------------------------------------------------------------------------

    @contract
    async def test_subscription_provides_the_interface(self) -> None:
        _, subscription = await self.subscribe()
        self.assertTrue(verifyObject(ISwarmEvents, subscription))

    @contract
    async def test_scaling_up_is_reported_as_an_update_and_a_started_task(self) -> None:
        name = self.new_service("events-up", replicas=0)
        received, _ = await self.subscribe()
        await self.swarm.scale(name, 1)

        async def reported() -> None:
            status = await self.running_tasks(name, 1)
            self.assertTrue(self.events_of(received, name, "service", "update"), received)
            started = {event.task_id
                       for event in self.events_of(received, name, "container", "start")}
            self.assertIn(status.running_tasks[0].id, started, received)

        await self.eventually(reported)

    @contract
    async def test_killed_task_is_reported_dead_then_restarted(self) -> None:
        name = self.new_service("events-kill", replicas=1)
        [killed] = (await self.eventually(lambda: self.running_tasks(name, 1))).running_tasks
        received, _ = await self.subscribe()
        self.kill_tasks(name)

        async def died() -> None:
            deaths = self.events_of(received, name, "container", "die")
            self.assertEqual([(event.task_id, event.exit_code) for event in deaths],
                             [(killed.id, 137)], received)

        await self.eventually(died)

        async def restarted() -> None:
            status = await self.running_tasks(name, 1)
            [replacement] = status.running_tasks
            self.assertNotEqual(replacement.id, killed.id)
            started = self.events_of(received, name, "container", "start")
            self.assertIn(replacement.id, [event.task_id for event in started], received)
            [dead] = [task for task in status.tasks if task.id == killed.id]
            self.assertTrue(dead.failed)
            self.assertIn("137", dead.error)

        await self.eventually(restarted)

    @contract
    async def test_removed_service_is_reported(self) -> None:
        name = self.new_service("events-rm", replicas=0)
        received, _ = await self.subscribe()
        self.remove_service(name)

        async def reported() -> None:
            self.assertTrue(self.events_of(received, name, "service", "remove"), received)

        await self.eventually(reported)

    @contract
    async def test_nothing_is_delivered_after_stop(self) -> None:
        name = self.new_service("events-stop", replicas=0)
        received, subscription = await self.subscribe()
        self.assertIsNone(await subscription.stop())
        self.assertIsNone(await subscription.ended)
        await self.swarm.scale(name, 1)
        await self.eventually(lambda: self.running_tasks(name, 1))
        self.assertEqual(received, [])


class FakeSwarmContractTests(SwarmContractTests, unittest.SynchronousTestCase):
    """
    The contract on L{FakeSwarm}: every test finishes without waiting.
    """

    def setUp(self) -> None:
        self.swarm = FakeSwarm()
        self.swarm.missing_images.add(MISSING_IMAGE)

    def make_service(self, name, replicas=0, labels=None, image=engine.TEST_IMAGE, *,
                     memory_reservation=0, memory_limit=0) -> None:
        self.swarm.add_service(name, replicas, labels, image=image,
                               memory_reservation=memory_reservation,
                               memory_limit=memory_limit)

    def make_networked_service(self, name: str) -> None:
        self.swarm.add_service(name, 1)

    async def eventually(self, check):
        return await check()

    def unreachable_swarm(self) -> FakeSwarm:
        swarm = FakeSwarm()
        swarm.available = False
        return swarm

    def kill_tasks(self, name: str) -> None:
        self.swarm.kill_tasks(name)

    def make_crashing_service(self, name: str, max_attempts: int) -> None:
        self.swarm.add_service(name, replicas=1, max_attempts=max_attempts,
                               restart_condition="on-failure", exits_at_once=True)

    def remove_service(self, name: str) -> None:
        self.swarm.remove_service(name)

    def force_update(self, name: str) -> None:
        self.swarm.force_update(name)

    def run_contract(self, coroutine) -> None:
        outcome: list[Any] = []
        Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
        if not outcome:
            self.fail("FakeSwarm made a contract test wait; the fake must be synchronous")
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()


class DockerSwarmContractTests(SwarmContractTests, unittest.TestCase):
    """
    The contract on L{DockerSwarm} and the real engine: each test makes its own uniquely
    named services from the test image, and removes them afterwards.
    """

    #: Upper bound for anything the engine does by itself (starting or stopping a task).
    deadline = 30.0

    def setUp(self) -> None:
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)
        self.swarm = self.started(DockerSwarm(engine.engine_url(), reactor, timeout=10))

    def started(self, swarm: DockerSwarm) -> DockerSwarm:
        swarm.startService()
        self.addCleanup(swarm.stopService)
        return swarm

    def make_service(self, name, replicas=0, labels=None, image=engine.TEST_IMAGE, *,
                     memory_reservation=0, memory_limit=0) -> None:
        self.addCleanup(engine.remove_service, self.client, name)
        engine.create_service(self.client, name, replicas=replicas, labels=labels,
                              image=image, memory_reservation=memory_reservation or None,
                              memory_limit=memory_limit or None)

    def make_networked_service(self, name: str) -> None:
        network = engine.create_network(self.client, name)
        self.addCleanup(engine.remove_network, self.client, network)
        self.addCleanup(engine.remove_service, self.client, name)
        engine.create_service(self.client, name, replicas=1, networks=[network])

    async def eventually(self, check):
        return await engine.poll_until(check, reactor, timeout=self.deadline)

    def unreachable_swarm(self) -> DockerSwarm:
        return self.started(DockerSwarm(MISSING_SOCKET, reactor, timeout=5))

    def kill_tasks(self, name: str) -> None:
        for container in self.client.containers.list(
                filters={"label": f"com.docker.swarm.service.name={name}"}):
            container.kill()

    def make_crashing_service(self, name: str, max_attempts: int) -> None:
        self.addCleanup(engine.remove_service, self.client, name)
        self.client.services.create(
            engine.TEST_IMAGE, ["false"], name=name,
            labels={engine.TEST_LABEL: "1"},
            mode={"Replicated": {"Replicas": 1}},
            endpoint_spec={"Mode": "dnsrr"},
            restart_policy={"Condition": "on-failure", "Delay": 100_000_000,
                            "MaxAttempts": max_attempts},
        )

    def remove_service(self, name: str) -> None:
        engine.remove_service(self.client, name)

    def force_update(self, name: str) -> None:
        self.client.services.get(name).force_update()

    def run_contract(self, coroutine) -> Deferred[None]:
        return Deferred.fromCoroutine(coroutine)

    # Beyond the contract: what only the real engine can show ----------------------------

    @contract
    async def test_scale_changes_nothing_but_the_replicas(self) -> None:
        """
        A changed task template would make Swarm replace running tasks, so C{scale}
        must write the spec back exactly as it found it.
        """
        name = self.new_service("spec", replicas=0, labels={"orchtest.role": "agent"})
        before = self.client.api.inspect_service(name)["Spec"]
        await self.swarm.scale(name, 2)
        after = self.client.api.inspect_service(name)["Spec"]
        self.assertEqual(after.pop("Mode"), {"Replicated": {"Replicas": 2}})
        before.pop("Mode")
        self.assertEqual(after, before)

    @contract
    async def test_the_node_memory_is_what_the_kernel_says(self) -> None:
        with open("/proc/meminfo") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
        self.assertAlmostEqual(await self.swarm.node_memory() / (kib * 1024), 1.0, places=2)


# DockerSwarm on its own: a synchronous pool, the real SDK, no engine or a scripted one ---


class NonThreadPool:
    """
    A thread pool that runs the work at once, in the calling thread.
    """

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs) -> None:
        try:
            result = f(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class NonReactor:
    """
    Delivers "from a thread" at once: with L{NonThreadPool}, results are synchronous.
    """

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


class HeldThreadPool:
    """
    A thread pool that runs the work only when the test says so.
    """

    def __init__(self) -> None:
        self.held: list[tuple] = []

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs) -> None:
        self.held.append((onResult, f, args, kwargs))

    def run_held(self) -> None:
        held, self.held = self.held, []
        for onResult, f, args, kwargs in held:
            NonThreadPool().callInThreadWithCallback(onResult, f, *args, **kwargs)


def synchronous_swarm(url: str, timeout: float = 5.0, threadpool=None) -> DockerSwarm:
    swarm = DockerSwarm(url, NonReactor(), timeout=timeout,
                        threadpool=threadpool or NonThreadPool())
    swarm.startService()
    return swarm


class DockerSwarmUnreachableTests(unittest.SynchronousTestCase):
    """
    With no engine at its URL, every call fails with L{SwarmUnavailable} naming the URL.
    """

    def setUp(self) -> None:
        self.swarm = synchronous_swarm(MISSING_SOCKET)

    def assert_unavailable(self, result: Deferred[Any]) -> None:
        error = self.failureResultOf(result, SwarmUnavailable).value
        self.assertIn(MISSING_SOCKET, str(error))

    def test_status(self) -> None:
        self.assert_unavailable(self.swarm.status("agent"))

    def test_scale(self) -> None:
        self.assert_unavailable(self.swarm.scale("agent", 1))

    def test_discover(self) -> None:
        self.assert_unavailable(self.swarm.discover("orchestrator.agent"))

    def test_no_docker_or_requests_exception_escapes(self) -> None:
        failure = self.failureResultOf(self.swarm.status("agent"))
        self.assertIs(failure.type, SwarmUnavailable)

    def test_calls_after_a_failed_connection_try_again(self) -> None:
        """
        The client is made on first use; a failure to make it is not remembered.
        """
        self.assert_unavailable(self.swarm.status("agent"))
        self.assert_unavailable(self.swarm.status("agent"))


class DockerSwarmLifecycleTests(unittest.SynchronousTestCase):
    """
    C{startService}/C{stopService}: the pool lives with the service.
    """

    def test_calls_before_start_fail_with_swarm_unavailable(self) -> None:
        swarm = DockerSwarm(MISSING_SOCKET, NonReactor(), threadpool=NonThreadPool())
        error = self.failureResultOf(swarm.status("agent"), SwarmUnavailable).value
        self.assertIn("not running", str(error))

    def test_calls_after_stop_fail_with_swarm_unavailable(self) -> None:
        swarm = synchronous_swarm(MISSING_SOCKET)
        self.successResultOf(swarm.stopService())
        self.failureResultOf(swarm.scale("agent", 1), SwarmUnavailable)

    def test_stop_waits_for_calls_in_flight(self) -> None:
        pool = HeldThreadPool()
        swarm = synchronous_swarm(MISSING_SOCKET, threadpool=pool)
        status = swarm.status("agent")
        stopped = swarm.stopService()
        self.assertNoResult(stopped)
        pool.run_held()
        self.failureResultOf(status, SwarmUnavailable)
        self.assertIsNone(self.successResultOf(stopped))

    def test_owns_a_docker_thread_pool_while_running(self) -> None:
        swarm = DockerSwarm(MISSING_SOCKET, NonReactor())
        swarm.startService()
        try:
            self.assertTrue(_docker_threads())
        finally:
            self.successResultOf(swarm.stopService())
        self.assertEqual(_docker_threads(), [])


def _docker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if "docker" in thread.name]


class ScriptedEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """
    A Docker engine that answers what the test scripted, on a Unix socket, in a thread
    of its own: the real SDK talks HTTP to it, to produce what a healthy single-node
    Swarm never says (conflicts, "not a swarm manager", 500s, silence).
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str) -> None:
        #: (method, path without the /v1.xx prefix) -> responses; the last one repeats.
        self.script: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        #: Every request: (method, path, query, JSON body or None).
        self.requests: list[tuple[str, str, dict, Any]] = []
        #: Set to release requests scripted to hang (status None).
        self.release = threading.Event()
        super().__init__(path, _ScriptedHandler)

    def answer(self, method: str, path: str, *responses: tuple[int | None, Any]) -> None:
        self.script[(method, path)] = list(responses)


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedEngine

    def do_GET(self) -> None:
        self._respond()

    def do_POST(self) -> None:
        self._respond()

    def _respond(self) -> None:
        url = urlsplit(self.path)
        path = re.sub(r"^/v[0-9.]+", "", url.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, path, parse_qs(url.query), body))
        if path == "/version":
            status, reply = 200, {"ApiVersion": "1.41", "Version": "20.10.24"}
        else:
            responses = self.server.script.get((self.command, path))
            status, reply = (
                (responses.pop(0) if len(responses) > 1 else responses[0])
                if responses else (404, {"message": f"page not found: {path}"})
            )
        if status is None:
            self.server.release.wait(10)
            return
        if isinstance(reply, StreamedEvents):
            self._stream(reply)
            return
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, reply: StreamedEvents) -> None:
        """
        Answer as the engine's /events does: chunked JSON documents, then (like an
        engine that went away) a connection closed without the final chunk.
        """
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in reply.events:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        if reply.hold:
            self.server.release.wait(10)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@attrs.frozen
class StreamedEvents:
    """
    A scripted answer to C{GET /events}: these events, then the end of the stream, at
    once or (C{hold}) only once the test releases it.
    """

    events: tuple[dict, ...] = ()
    hold: bool = False


def engine_event(kind: str, action: str, **attributes: str) -> dict:
    return {"Type": kind, "Action": action, "Actor": {"ID": "x", "Attributes": attributes},
            "time": 1, "timeNano": 1}


class QueuedReactor:
    """
    Collects what other threads hand to the reactor thread; the test thread runs it.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple, dict]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.calls.put((f, args, kwargs))

    def run_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            try:
                f, args, kwargs = self.calls.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"not done within {timeout}s") from None
            f(*args, **kwargs)


def service_json(name: str, version: int = 7, replicas: int = 0) -> dict:
    """
    A service as Docker 20.10 describes it, with every part of the spec that a
    scale must carry over.
    """
    return {
        "ID": f"{name}-id",
        "Version": {"Index": version},
        "CreatedAt": "2026-01-01T00:00:00.5Z",
        "Spec": {
            "Name": name,
            "Labels": {"orchestrator.agent": name},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "agent:1", "Env": ["A=1"],
                                  "StopGracePeriod": 10_000_000_000},
                "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 3},
                "Networks": [{"Target": "agents-net"}],
                "ForceUpdate": 0,
            },
            "Mode": {"Replicated": {"Replicas": replicas}},
            "UpdateConfig": {"Parallelism": 1, "Order": "start-first"},
            "RollbackConfig": {"Parallelism": 1},
            "EndpointSpec": {"Mode": "dnsrr"},
        },
    }


def task_json(task_id: str, service_id: str, created: str, state: str = "running",
              desired: str = "running", error: str | None = None) -> dict:
    status: dict[str, Any] = {"State": state}
    if error is not None:
        status["Err"] = error
    return {"ID": task_id, "ServiceID": service_id, "CreatedAt": created,
            "DesiredState": desired, "Status": status}


OUT_OF_SEQUENCE = (500, {"message": "rpc error: code = Unknown desc = update out of sequence"})
NOT_A_MANAGER = (503, {"message": 'This node is not a swarm manager. Use "docker swarm init" '
                                  'or "docker swarm join" to connect this node to swarm and '
                                  "try again."})


def start_scripted_engine(test) -> tuple[ScriptedEngine, str]:
    """
    A L{ScriptedEngine} serving on a fresh socket in a thread, stopped when C{test}
    ends; returns it and its Docker URL.
    """
    directory = tempfile.mkdtemp(prefix="orchtest-engine-")
    test.addCleanup(os.rmdir, directory)
    socket_path = os.path.join(directory, "docker.sock")
    engine = ScriptedEngine(socket_path)
    thread = threading.Thread(target=engine.serve_forever, name="scripted-engine")
    thread.start()
    test.addCleanup(os.unlink, socket_path)
    test.addCleanup(engine.server_close)
    test.addCleanup(thread.join)
    test.addCleanup(engine.shutdown)
    test.addCleanup(engine.release.set)
    return engine, f"unix://{socket_path}"


class DockerSwarmScriptedEngineTests(unittest.SynchronousTestCase):
    """
    How L{DockerSwarm} reads Docker's answers and maps its errors.
    """

    def setUp(self) -> None:
        self.engine, self.url = start_scripted_engine(self)
        self.swarm = synchronous_swarm(self.url, timeout=5)

    def updates(self) -> list[tuple[str, str, dict, Any]]:
        return [request for request in self.engine.requests if request[1].endswith("/update")]

    def test_status_reads_replicas_labels_and_own_tasks_oldest_first(self) -> None:
        self.engine.answer("GET", "/services/agent", (200, service_json("agent", replicas=1)))
        self.engine.answer("GET", "/tasks", (200, [
            task_json("new", "agent-id", "2026-01-01T00:00:02.5Z", state="preparing"),
            task_json("old", "agent-id", "2026-01-01T00:00:02.25Z", state="rejected",
                      desired="shutdown", error="No such image: agent:1"),
            # The "service" filter also matches by ID prefix: not this service's task.
            task_json("other", "agent-id-2", "2026-01-01T00:00:01Z"),
        ]))
        status = self.successResultOf(self.swarm.status("agent"))
        self.assertEqual(status.name, "agent")
        self.assertEqual(status.replicas, 1)
        self.assertEqual(status.labels, {"orchestrator.agent": "agent"})
        self.assertEqual([task.id for task in status.tasks], ["old", "new"])
        self.assertEqual(status.tasks[0].error, "No such image: agent:1")
        self.assertTrue(status.tasks[0].failed)
        self.assertEqual(status.tasks[1].error, "")

    def test_not_found_is_unknown_service(self) -> None:
        self.engine.answer("GET", "/services/agent", (404, {"message": "service agent not found"}))
        self.failureResultOf(self.swarm.status("agent"), UnknownService)
        self.failureResultOf(self.swarm.scale("agent", 1), UnknownService)

    def test_service_gone_before_its_tasks_are_read_is_unknown_service(self) -> None:
        self.engine.answer("GET", "/services/agent", (200, service_json("agent")))
        self.engine.answer("GET", "/tasks", (404, {"message": "service agent-id not found"}))
        self.failureResultOf(self.swarm.status("agent"), UnknownService)

    def test_not_a_swarm_manager_is_swarm_unavailable(self) -> None:
        self.engine.answer("GET", "/services/agent", NOT_A_MANAGER)
        self.engine.answer("GET", "/services", NOT_A_MANAGER)
        for result in [self.swarm.status("agent"), self.swarm.scale("agent", 1),
                       self.swarm.discover("orchestrator.agent")]:
            error = self.failureResultOf(result, SwarmUnavailable).value
            self.assertIn(self.url, str(error))
            self.assertIn("not a swarm manager", str(error))

    def test_other_api_errors_are_swarm_errors_with_dockers_explanation(self) -> None:
        self.engine.answer("GET", "/services/agent", (500, {"message": "raft is sulking"}))
        error = self.failureResultOf(self.swarm.status("agent"), SwarmError).value
        self.assertNotIsInstance(error, (SwarmUnavailable, UnknownService))
        self.assertIn("raft is sulking", str(error))

    def test_silence_beyond_the_timeout_is_swarm_unavailable(self) -> None:
        swarm = synchronous_swarm(self.url, timeout=0.2)
        self.engine.answer("GET", "/services/agent", (None, None))
        error = self.failureResultOf(swarm.status("agent"), SwarmUnavailable).value
        self.assertIn("did not answer within 0.2s", str(error))

    def test_scale_writes_back_the_spec_with_only_the_replicas_changed(self) -> None:
        self.engine.answer("GET", "/services/agent", (200, service_json("agent", version=7)))
        self.engine.answer("POST", "/services/agent-id/update", (200, {}))
        self.assertIsNone(self.successResultOf(self.swarm.scale("agent", 1)))
        [(_, _, query, body)] = self.updates()
        self.assertEqual(query["version"], ["7"])
        expected = deepcopy(service_json("agent")["Spec"])
        expected["Mode"] = {"Replicated": {"Replicas": 1}}
        self.assertEqual(body, expected)

    def test_scale_to_the_current_replicas_writes_nothing(self) -> None:
        self.engine.answer("GET", "/services/agent", (200, service_json("agent", replicas=1)))
        self.successResultOf(self.swarm.scale("agent", 1))
        self.assertEqual(self.updates(), [])

    def test_scale_reads_again_after_an_update_out_of_sequence(self) -> None:
        self.engine.answer("GET", "/services/agent", (200, service_json("agent", version=7)),
                           (200, service_json("agent", version=8)))
        self.engine.answer("POST", "/services/agent-id/update", OUT_OF_SEQUENCE, (200, {}))
        self.successResultOf(self.swarm.scale("agent", 1))
        self.assertEqual([query["version"] for _, _, query, _ in self.updates()],
                         [["7"], ["8"]])

    def test_scale_gives_up_after_repeated_conflicts(self) -> None:
        self.engine.answer("GET", "/services/agent", (200, service_json("agent")))
        self.engine.answer("POST", "/services/agent-id/update", OUT_OF_SEQUENCE)
        error = self.failureResultOf(self.swarm.scale("agent", 1), SwarmError).value
        self.assertIn("update out of sequence", str(error))
        self.assertEqual(len(self.updates()), DockerSwarm.scale_attempts)

    def test_scale_of_a_global_service_writes_nothing(self) -> None:
        service = service_json("agent")
        service["Spec"]["Mode"] = {"Global": {}}
        self.engine.answer("GET", "/services/agent", (200, service))
        error = self.failureResultOf(self.swarm.scale("agent", 1), SwarmError).value
        self.assertIn("global", str(error))
        self.assertEqual(self.updates(), [])

    def test_discover_groups_tasks_by_service(self) -> None:
        self.engine.answer("GET", "/services", (200, [service_json("b"), service_json("a")]))
        self.engine.answer("GET", "/tasks", (200, [
            task_json("a1", "a-id", "2026-01-01T00:00:01Z"),
            task_json("b1", "b-id", "2026-01-01T00:00:01Z", state="failed",
                      desired="shutdown", error="task: non-zero exit (1)"),
            task_json("x1", "x-id", "2026-01-01T00:00:01Z"),
        ]))
        found = self.successResultOf(self.swarm.discover("orchestrator.agent"))
        self.assertEqual([(status.name, [task.id for task in status.tasks])
                          for status in found],
                         [("a", ["a1"]), ("b", ["b1"])])
        [(_, _, query, _)] = [r for r in self.engine.requests if r[1] == "/services"]
        self.assertEqual(json.loads(query["filters"][0]), {"label": ["orchestrator.agent"]})

    def test_statuses_read_every_service_in_two_requests(self) -> None:
        a, b = service_json("a", replicas=1), service_json("b")
        b["Spec"]["TaskTemplate"]["Resources"] = {"Reservations": {"MemoryBytes": 1024},
                                                  "Limits": {"MemoryBytes": 2048}}
        self.engine.answer("GET", "/services", (200, [a, b]))
        self.engine.answer("GET", "/tasks", (200, [
            task_json("a1", "a-id", "2026-01-01T00:00:01Z"),
            task_json("b1", "b-id", "2026-01-01T00:00:01Z", state="shutdown",
                      desired="shutdown"),
        ]))
        found = self.successResultOf(self.swarm.statuses())
        self.assertEqual({name: [task.id for task in status.tasks]
                          for name, status in found.items()}, {"a": ["a1"], "b": ["b1"]})
        self.assertEqual((found["b"].memory_reservation, found["b"].memory_limit), (1024, 2048))
        self.assertEqual([request[1] for request in self.engine.requests
                          if request[1] != "/version"], ["/services", "/tasks"])

    def test_node_memory_is_the_engines_mem_total(self) -> None:
        self.engine.answer("GET", "/info", (200, {"MemTotal": 25_000_000_000}))
        self.assertEqual(self.successResultOf(self.swarm.node_memory()), 25_000_000_000)

    def test_discover_without_matches_asks_for_no_tasks(self) -> None:
        self.engine.answer("GET", "/services", (200, []))
        self.assertEqual(self.successResultOf(self.swarm.discover("x")), ())
        self.assertNotIn("/tasks", [request[1] for request in self.engine.requests])


class DockerSwarmEventStreamTests(unittest.SynchronousTestCase):
    """
    How L{DockerSwarm} reads the engine's event stream in a thread of its own, and how
    the stream ends: stopped by us, or cut by the engine.
    """

    def setUp(self) -> None:
        self.engine, self.url = start_scripted_engine(self)
        self.reactor = QueuedReactor()
        self.swarm = DockerSwarm(self.url, self.reactor, timeout=5,
                                 threadpool=NonThreadPool())
        self.swarm.startService()
        self.received: list[SwarmEvent] = []

    def subscribe(self) -> Any:
        opened = self.swarm.events(self.received.append)
        self.reactor.run_until(lambda: opened.called)
        return self.successResultOf(opened)

    def test_events_of_swarm_services_are_delivered_in_order(self) -> None:
        task = {"com.docker.swarm.service.name": "agent", "com.docker.swarm.task.id": "t1"}
        self.engine.answer("GET", "/events", (200, StreamedEvents((
            engine_event("service", "update", name="agent"),
            engine_event("container", "start", **task),
            engine_event("container", "die", name="not-a-task", exitCode="0"),
            engine_event("network", "connect", name="agents"),
            engine_event("container", "die", exitCode="137", **task),
        ))))
        subscription = self.subscribe()
        self.reactor.run_until(lambda: subscription.ended.called)
        self.assertEqual(self.received, [
            SwarmEvent("agent", "service", "update"),
            SwarmEvent("agent", "container", "start", "t1"),
            SwarmEvent("agent", "container", "die", "t1", 137),
        ])
        [(_, _, query, _)] = [r for r in self.engine.requests if r[1] == "/events"]
        self.assertEqual(json.loads(query["filters"][0]), WATCHED_EVENTS)
        self.failureResultOf(subscription.ended, SwarmUnavailable)

    def test_stream_cut_by_the_engine_ends_with_swarm_unavailable(self) -> None:
        self.engine.answer("GET", "/events", (200, StreamedEvents()))
        subscription = self.subscribe()
        self.reactor.run_until(lambda: subscription.ended.called)
        error = self.failureResultOf(subscription.ended, SwarmUnavailable).value
        self.assertIn(self.url, str(error))
        self.assertIn("event stream", str(error))
        self.assertEqual(_event_threads(), [])

    def test_stop_ends_a_stream_the_engine_keeps_open(self) -> None:
        self.engine.answer("GET", "/events", (200, StreamedEvents(hold=True)))
        subscription = self.subscribe()
        stopped = subscription.stop()
        self.reactor.run_until(lambda: stopped.called)
        self.assertIsNone(self.successResultOf(subscription.ended))
        self.assertEqual(_event_threads(), [])

    def test_stop_service_ends_every_stream(self) -> None:
        self.engine.answer("GET", "/events", (200, StreamedEvents(hold=True)))
        subscriptions = [self.subscribe(), self.subscribe()]
        stopped = self.swarm.stopService()
        self.reactor.run_until(lambda: stopped.called)
        for subscription in subscriptions:
            self.assertIsNone(self.successResultOf(subscription.ended))
        self.assertEqual(_event_threads(), [])

    def test_refused_subscription_fails_with_dockers_explanation(self) -> None:
        self.engine.answer("GET", "/events", (500, {"message": "events are sulking"}))
        opened = self.swarm.events(self.received.append)
        self.reactor.run_until(lambda: opened.called)
        error = self.failureResultOf(opened, SwarmError).value
        self.assertIn("events are sulking", str(error))

    def test_subscription_before_start_fails_with_swarm_unavailable(self) -> None:
        swarm = DockerSwarm(self.url, self.reactor, threadpool=NonThreadPool())
        self.failureResultOf(swarm.events(self.received.append), SwarmUnavailable)


def _event_threads() -> list[threading.Thread]:
    """
    The event stream threads still alive, given a moment to finish (the thread hands
    its last call to the reactor just before it returns).
    """
    deadline = time.monotonic() + 5
    while True:
        threads = [t for t in threading.enumerate() if t.name == "docker-events"]
        if not threads or time.monotonic() > deadline:
            return threads
        time.sleep(0.01)


# FakeSwarm's test controls ----------------------------------------------------------------


class FakeSwarmControlTests(unittest.SynchronousTestCase):
    """
    The knobs unit tests use to move the fake's tasks by hand.
    """

    def test_without_auto_run_new_tasks_wait_for_run_tasks(self) -> None:
        swarm = FakeSwarm(auto_run=False)
        swarm.add_service("agent")
        swarm.scale("agent", 1)
        [task] = self.successResultOf(swarm.status("agent")).tasks
        self.assertEqual((task.state, task.desired_state), ("pending", "running"))
        swarm.run_tasks("agent")
        self.assertEqual(len(self.successResultOf(swarm.status("agent")).running_tasks), 1)

    def test_fail_tasks_rejects_the_wanted_tasks_with_the_error(self) -> None:
        swarm = FakeSwarm(auto_run=False)
        swarm.add_service("agent")
        swarm.scale("agent", 1)
        swarm.fail_tasks("agent", "No such image: agent:1")
        [task] = self.successResultOf(swarm.status("agent")).tasks
        self.assertEqual((task.state, task.desired_state, task.error),
                         ("rejected", "shutdown", "No such image: agent:1"))

    def test_scale_down_marks_tasks_for_removal_as_swarm_does(self) -> None:
        swarm = FakeSwarm()
        swarm.add_service("agent", replicas=1)
        swarm.scale("agent", 0)
        [task] = self.successResultOf(swarm.status("agent")).tasks
        self.assertEqual((task.state, task.desired_state), ("shutdown", "remove"))

    def test_scale_calls_are_recorded_in_order(self) -> None:
        swarm = FakeSwarm()
        swarm.add_service("agent")
        swarm.scale("agent", 1)
        swarm.scale("agent", 0)
        self.assertEqual(swarm.scale_calls, [("agent", 1), ("agent", 0)])

    def test_unavailable_fails_every_call(self) -> None:
        swarm = FakeSwarm()
        swarm.add_service("agent")
        swarm.available = False
        self.failureResultOf(swarm.status("agent"), SwarmUnavailable)
        self.failureResultOf(swarm.scale("agent", 1), SwarmUnavailable)
        self.failureResultOf(swarm.discover("x"), SwarmUnavailable)
        self.failureResultOf(swarm.events(lambda event: None), SwarmUnavailable)
        self.assertEqual(swarm.scale_calls, [])

    def test_end_event_streams_ends_every_subscription_as_an_engine_gone(self) -> None:
        swarm = FakeSwarm()
        subscription = self.successResultOf(swarm.events(lambda event: None))
        swarm.end_event_streams()
        self.failureResultOf(subscription.ended, SwarmUnavailable)

    def test_killed_tasks_are_restarted_until_max_attempts(self) -> None:
        swarm = FakeSwarm()
        swarm.add_service("agent", replicas=1, max_attempts=1)
        swarm.kill_tasks("agent")
        self.assertEqual(len(self.successResultOf(swarm.status("agent")).running_tasks), 1)
        swarm.kill_tasks("agent")
        status = self.successResultOf(swarm.status("agent"))
        self.assertEqual(status.running_tasks, ())
        self.assertTrue(status.restarts_exhausted)

    def test_restarts_wait_for_run_tasks_without_auto_run(self) -> None:
        swarm = FakeSwarm(auto_run=False)
        swarm.add_service("agent", replicas=1)
        swarm.kill_tasks("agent")
        status = self.successResultOf(swarm.status("agent"))
        self.assertEqual([task.state for task in status.tasks], ["failed", "pending"])
        swarm.run_tasks("agent")
        self.assertEqual(len(self.successResultOf(swarm.status("agent")).running_tasks), 1)

    def test_tasks_exiting_at_once_need_a_limit(self) -> None:
        self.assertRaises(ValueError, FakeSwarm().add_service, "agent", 1,
                          exits_at_once=True)


class FakeSwarmNodeTests(unittest.SynchronousTestCase):
    """
    The fake's nodes: the multi-node behaviour the cluster integration tests check on a
    real swarm of three nodes (tests/integration/test_multinode.py).
    """

    def setUp(self) -> None:
        self.swarm = FakeSwarm()
        self.events: list[SwarmEvent] = []
        self.successResultOf(self.swarm.events(self.events.append))
        self.worker1 = self.swarm.add_node("worker1")
        self.worker2 = self.swarm.add_node("worker2")

    def status(self, name: str) -> ServiceStatus:
        return self.successResultOf(self.swarm.status(name))

    def placed(self, name: str) -> list[str]:
        return sorted(task.node_id for task in self.status(name).running_tasks)

    def test_tasks_are_spread_over_the_active_nodes(self) -> None:
        self.swarm.add_service("agent", replicas=3)
        self.assertEqual(self.placed("agent"),
                         sorted([self.swarm.node_id("fake-manager"), self.worker1,
                                 self.worker2]))

    def test_only_the_local_nodes_containers_are_heard(self) -> None:
        self.swarm.drain_node("fake-manager")
        self.swarm.add_service("agent", replicas=1)
        [task] = self.status("agent").running_tasks
        self.swarm.kill_task("agent", task.id)
        self.assertEqual([event for event in self.events if event.kind == "container"], [])
        # Seen in the task list alone: the death, and the restart.
        status = self.status("agent")
        self.assertTrue(next(t for t in status.tasks if t.id == task.id).failed)
        self.assertEqual(len(status.running_tasks), 1)

    def test_a_drained_node_loses_its_tasks_to_the_others(self) -> None:
        self.swarm.add_service("agent", replicas=2)
        before = {task.id: task.node_id for task in self.status("agent").running_tasks}
        self.swarm.drain_node("worker1")
        status = self.status("agent")
        self.assertNotIn(self.worker1, self.placed("agent"))
        self.assertEqual(len(status.running_tasks), 2)
        for task in status.tasks:
            if before.get(task.id) == self.worker1:
                self.assertEqual((task.state, task.desired_state), ("shutdown", "shutdown"))
        self.assertIn(SwarmEvent("", "node", "update", node_id=self.worker1), self.events)
        self.assertTrue(self.successResultOf(self.swarm.nodes())[self.worker1].gone)

    def test_a_node_down_keeps_showing_its_tasks_as_they_were_but_replaces_them(self) -> None:
        self.swarm.drain_node("fake-manager")
        self.swarm.drain_node("worker2")
        self.swarm.add_service("agent", replicas=1)
        [lost] = self.status("agent").running_tasks
        self.swarm.activate_node("worker2")
        self.swarm.node_down("worker1")
        status = self.status("agent")
        [old] = [task for task in status.tasks if task.id == lost.id]
        self.assertEqual((old.state, old.desired_state), ("running", "shutdown"))
        self.assertEqual(self.placed("agent"), [self.worker2])
        node = self.successResultOf(self.swarm.nodes())[self.worker1]
        self.assertEqual(node.describe(), "node worker1 is down: heartbeat failure")

    def test_a_task_with_no_node_to_go_to_waits_until_one_is_active(self) -> None:
        for hostname in ("fake-manager", "worker1", "worker2"):
            self.swarm.drain_node(hostname)
        self.swarm.add_service("agent", replicas=1)
        [waiting] = self.status("agent").tasks
        self.assertEqual((waiting.state, waiting.node_id), ("pending", ""))
        self.assertIn("no suitable node", waiting.error)
        self.swarm.activate_node("worker2")
        self.assertEqual(self.placed("agent"), [self.worker2])


def _task(state: str, desired: str = "shutdown") -> TaskStatus:
    return TaskStatus(id=secrets.token_hex(4), state=state, desired_state=desired)


class ServiceStatusTests(unittest.SynchronousTestCase):
    """
    What a L{ServiceStatus} says about restarts, from the tasks Swarm keeps.
    """

    def status(self, *tasks: TaskStatus, replicas: int | None = 1, max_attempts: int = 2,
               condition: str = "on-failure") -> ServiceStatus:
        return ServiceStatus("agent", replicas, tasks, max_attempts=max_attempts,
                             restart_condition=condition)

    def test_failed_attempts_count_the_newest_failures_in_a_row(self) -> None:
        status = self.status(_task("failed"), _task("shutdown", "remove"),
                             _task("failed"), _task("rejected"))
        self.assertEqual(status.failed_attempts, 2)

    def test_more_failures_than_max_attempts_and_nothing_live_is_exhausted(self) -> None:
        self.assertTrue(self.status(*[_task("failed")] * 3).restarts_exhausted)

    def test_a_restart_waiting_out_its_delay_is_not_exhausted(self) -> None:
        status = self.status(*[_task("failed")] * 3, _task("ready", "ready"))
        self.assertFalse(status.restarts_exhausted)

    def test_swarm_catching_up_with_a_failure_is_not_exhausted(self) -> None:
        # The newest task died, Swarm has not recorded it yet: two failures so far.
        status = self.status(_task("failed"), _task("failed"), _task("running", "running"))
        self.assertFalse(status.restarts_exhausted)

    def test_without_a_limit_nothing_is_exhausted(self) -> None:
        status = self.status(*[_task("failed")] * 5, max_attempts=0, condition="any")
        self.assertFalse(status.restarts_exhausted)

    def test_condition_none_gives_up_after_the_first_failure(self) -> None:
        self.assertTrue(self.status(_task("failed"), condition="none").restarts_exhausted)

    def test_a_service_scaled_to_zero_is_not_exhausted(self) -> None:
        self.assertFalse(self.status(*[_task("failed")] * 3, replicas=0).restarts_exhausted)
