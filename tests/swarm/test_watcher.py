"""
The Swarm event watcher: its subscription (its reconnects, its shutdown) and how it
hands the news over. A fake Swarm and a Clock: nothing waits.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.sync import RECONCILE_RETRY
from orchestrator.config.model import Policy
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from orchestrator.swarm.values import SwarmEvent
from orchestrator.swarm.watcher import MAX_RETRY, SwarmWatcher, reconnect_delay
from tests.agents.world import ALWAYS_ON, CountingSwarm, make_world
from tests.helpers import RecordingBus
from tests.proxy.harness import ProxyHarness, Response


class HeldEventsSwarm(FakeSwarm):
    """
    A fake Swarm whose subscriptions are made only when the test says so.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.held: list[tuple[Deferred, object]] = []

    def events(self, deliver):
        held: Deferred = Deferred()
        self.held.append((held, deliver))
        return held

    def release(self) -> None:
        pending, self.held = self.held, []
        for held, deliver in pending:
            FakeSwarm.events(self, deliver).chainDeferred(held)


class ReconnectDelayTests(SynchronousTestCase):
    def test_doubles_from_half_a_second(self):
        self.assertEqual([reconnect_delay(n) for n in range(5)], [0.5, 1, 2, 4, 8])

    def test_is_capped(self):
        self.assertEqual(reconnect_delay(10), MAX_RETRY)
        self.assertEqual(reconnect_delay(10_000), MAX_RETRY)


class SwarmWatcherTests(SynchronousTestCase):
    def test_subscribes_when_started(self):
        world = make_world()
        self.assertTrue(world.watcher.connected)

    def test_events_of_one_reactor_turn_make_one_read(self):
        swarm = CountingSwarm()
        world = make_world(("alpha", ALWAYS_ON), swarm=swarm)
        before = swarm.reads["alpha"]
        swarm.force_update("alpha")  # a die, an update, a start: three events
        self.assertEqual(swarm.reads["alpha"], before)  # nothing until the turn ends
        world.settle()
        self.assertEqual(swarm.reads["alpha"], before + 1)

    def test_a_node_event_has_the_awake_agents_read_again_not_the_sleeping(self):
        swarm = CountingSwarm()
        world = make_world(("alpha", ALWAYS_ON), ("beta", {}), swarm=swarm)
        worker = swarm.add_node("worker1")
        before = dict(swarm.reads)
        swarm.drain_node("worker1")
        world.settle()
        self.assertEqual(swarm.reads["alpha"], before["alpha"] + 1)
        self.assertEqual(swarm.reads["beta"], before["beta"])
        self.assertTrue(worker)

    def test_node_events_go_to_the_listener_together_in_one_turn(self):
        heard = []

        class Listener:
            def watches(self, service):
                return False

            def nodes_changed(self, events):
                heard.append(events)

            def everything_changed(self):
                pass

        swarm = FakeSwarm()
        clock = Clock()
        watcher = SwarmWatcher(swarm, Listener(), bus=RecordingBus(clock), clock=clock)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        worker = swarm.add_node("worker1")
        swarm.drain_node("worker1")
        clock.advance(0)
        self.assertEqual(heard, [(SwarmEvent("", "node", "create", node_id=worker),
                                  SwarmEvent("", "node", "update", node_id=worker))])

    def test_events_of_other_services_are_ignored(self):
        swarm = CountingSwarm()
        world = make_world(swarm=swarm)
        swarm.add_service("stranger", replicas=1)
        swarm.kill_tasks("stranger")
        world.settle()
        self.assertNotIn("stranger", swarm.reads)
        self.assertEqual(world.clock.getDelayedCalls(), [])

    def test_lost_stream_is_reported_and_subscribed_again_with_backoff(self):
        world = make_world()
        world.swarm.available = False
        world.swarm.end_event_streams()
        self.assertFalse(world.watcher.connected)
        self.assertEqual(world.bus.types(), ["agent.reconciled", "swarm.disconnected"])
        world.clock.advance(0.5)  # fails: the engine is still away
        world.clock.advance(0.99)
        self.assertFalse(world.watcher.connected)
        world.swarm.available = True
        world.clock.advance(0.01)  # the second retry, 1 s after the first
        self.assertTrue(world.watcher.connected)
        reconnected = world.bus.events[-1]
        self.assertEqual(reconnected.type, "swarm.reconnected")
        self.assertEqual(reconnected.fields, {"outage": 1.5, "attempts": 2})

    def test_what_happened_while_disconnected_is_read_on_reconnect(self):
        world = make_world(("alpha", ALWAYS_ON), swarm=FakeSwarm(auto_run=False))
        world.swarm.end_event_streams()
        world.swarm.kill_tasks("alpha")  # nobody hears it
        self.assertIs(world.agent().state, AgentState.READY)
        world.clock.advance(0.5)
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("non-zero exit (137)", world.agent().reason)

    def test_a_failed_read_is_tried_again(self):
        world = make_world(("alpha", ALWAYS_ON), swarm=FakeSwarm(auto_run=False))
        world.watcher.stopService()
        world.swarm.available = False  # e.g. back, but not a Swarm manager yet
        world.agent().service_changed()
        world.swarm.kill_tasks("alpha")
        world.swarm.available = True
        self.assertIs(world.agent().state, AgentState.READY)
        world.clock.advance(RECONCILE_RETRY)
        self.assertIs(world.agent().state, AgentState.DEGRADED)

    def test_engine_away_at_start_is_retried(self):
        swarm = FakeSwarm()
        swarm.available = False
        world = make_world(swarm=swarm)
        self.assertEqual(world.bus.types()[-1], "swarm.disconnected")
        swarm.available = True
        world.clock.advance(1)
        self.assertTrue(world.watcher.connected)

    def test_stop_ends_the_subscription_and_every_timer(self):
        world = make_world()
        [subscription] = world.swarm._subscriptions
        self.assertIsNone(self.successResultOf(world.watcher.stopService()))
        self.assertIsNone(self.successResultOf(subscription.ended))
        self.assertEqual(world.swarm._subscriptions, [])

    def test_stop_while_away_cancels_the_retry(self):
        world = make_world()
        world.swarm.end_event_streams()
        self.successResultOf(world.watcher.stopService())
        for agent in world.agents.values():
            agent.stop()
        self.assertEqual(world.clock.getDelayedCalls(), [])

    def test_stop_while_subscribing_waits_and_ends_the_late_subscription(self):
        swarm = HeldEventsSwarm()
        world = make_world(swarm=swarm)
        stopped = world.watcher.stopService()
        self.assertNoResult(stopped)
        swarm.release()
        self.successResultOf(stopped)
        self.assertEqual(swarm._subscriptions, [])
        self.assertFalse(world.watcher.connected)


class DegradedAlwaysOnRoutingTests(SynchronousTestCase):
    """
    The proxy keeps sending requests to a degraded always-on agent, and when the backend
    fails it says so with the agent's state.
    """

    def test_dead_backend_is_a_502_naming_the_state_and_the_reason(self):
        harness = ProxyHarness(replicas=1, swarm=FakeSwarm(auto_run=False),
                               policy=Policy.ALWAYS_ON, serving=False)
        harness.fixture.swarm.kill_tasks("alpha")
        harness.agent.service_changed()
        _, transport = harness.send(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        harness.network.refuse(ConnectionRefusedError())
        response = Response(transport.value())
        self.assertEqual(response.code, 502)
        body = response.json()
        self.assertEqual((body["status"], body["agent"]), ("degraded", "alpha"))
        # The public is told the cause; Swarm's words stay with the admin API.
        self.assertEqual(body["reason"], "the agent's service has no running task")
        self.assertIn("non-zero exit (137)", harness.agent.health()["reason"])
        self.assertIn("unreachable", body["error"])
        self.assertEqual(harness.fixture.swarm.scale_calls, [])

    def test_answering_backend_is_forwarded_while_degraded(self):
        harness = ProxyHarness(replicas=1, swarm=FakeSwarm(auto_run=False),
                               policy=Policy.ALWAYS_ON)
        harness.fixture.swarm.kill_tasks("alpha")
        harness.agent.service_changed()
        self.assertIs(harness.agent.state, AgentState.DEGRADED)
        self.assertEqual(harness.get().code, 200)
