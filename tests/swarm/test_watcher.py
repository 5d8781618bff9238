"""
Swarm's events, as they happen: the watcher's subscription (its reconnects, its
shutdown), each agent's reaction to the news (a dead task, a restart, exhausted
restarts, a service gone), the always-on policy under flapping health, and the state
machine over random sequences of all of it. A fake Swarm and a Clock: nothing waits.
"""

from __future__ import annotations

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.probe import ProbeResult
from orchestrator.agents.runtime import RECONCILE_RETRY, SWARM_LAG_LOOKS, SWARM_LAG_RETRY, Agent
from orchestrator.config.model import HealthConfig, Policy
from orchestrator.policy.admission import Admission
from orchestrator.states import TRANSITIONS, AgentState
from orchestrator.swarm.memory import FakeSwarm
from orchestrator.swarm.values import SwarmEvent
from orchestrator.swarm.watcher import MAX_RETRY, SwarmWatcher, reconnect_delay
from tests.helpers import RecordingBus, ScriptedProber, agent_config
from tests.proxy.harness import ProxyHarness, Response


class CountingSwarm(FakeSwarm):
    """
    A fake Swarm that counts the status reads of each service.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reads: dict[str, int] = {}

    def status(self, service):
        self.reads[service] = self.reads.get(service, 0) + 1
        return super().status(service)


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


@attrs.define
class World:
    """
    Agents against one fake Swarm, one clock, one bus, and a running watcher.
    """

    swarm: FakeSwarm
    clock: MemoryReactorClock
    bus: RecordingBus
    prober: ScriptedProber
    agents: dict[str, Agent]
    watcher: SwarmWatcher

    def agent(self, name: str = "alpha") -> Agent:
        return self.agents[name]

    def settle(self) -> None:
        """
        Let the watcher hand over what the fake Swarm said (it waits for the end of the
        reactor turn).
        """
        self.clock.advance(0)

    def transitions(self, name: str = "alpha") -> list[tuple[str, str, str]]:
        return [(event.type, event.fields["previous"], event.fields["state"])
                for event in self.bus.events
                if event.agent == name and "previous" in event.fields]


def make_world(*agents: tuple[str, dict], swarm: FakeSwarm | None = None,
               watch: bool = True, healthy: bool = True) -> World:
    """
    A running watcher over agents made from C{(name, config changes)}, each with a
    service of its own (C{replicas} and the other C{add_service} arguments are taken
    from the changes), reconciled.
    """
    clock = MemoryReactorClock()
    clock.advance(1000)
    swarm = swarm if swarm is not None else FakeSwarm()
    bus = RecordingBus(clock)
    prober = ScriptedProber(healthy)
    made = {}
    for name, changes in agents or (("alpha", {}),):
        changes = dict(changes)
        service_arguments = {key: changes.pop(key) for key in
                             ("replicas", "max_attempts", "restart_condition", "exits_at_once")
                             if key in changes}
        service_arguments.setdefault("replicas", 0)
        config = agent_config(name, **changes)
        swarm.add_service(config.service, **service_arguments)
        made[name] = Agent(config, swarm=swarm, prober=prober, bus=bus, reactor=clock)
    watcher = SwarmWatcher(swarm, made.values(), bus=bus, clock=clock)
    for agent in made.values():
        agent.start()
    if watch:
        watcher.startService()
    world = World(swarm, clock, bus, prober, made, watcher)
    world.settle()
    return world


ALWAYS_ON = {"policy": Policy.ALWAYS_ON, "replicas": 1}


def answering_when_cancelled(backend, path, timeout) -> Deferred:
    """
    A probe that never answers unless cancelled, when it fires with a failed result
    (never a failure), as L{orchestrator.agents.probe.HttpProber} does.
    """
    return Deferred(lambda probe: probe.callback(ProbeResult(False, "cancelled")))


# The watcher --------------------------------------------------------------------------


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


# The agents' reactions ------------------------------------------------------------------


class AlwaysOnTaskDeathTests(SynchronousTestCase):
    def world(self, **service):
        return make_world(("alpha", {**ALWAYS_ON, **service}), swarm=FakeSwarm(auto_run=False))

    def test_dead_task_degrades_at_once_with_swarms_reason(self):
        world = self.world()
        world.prober.healthy = False
        world.swarm.kill_tasks("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertEqual(world.agent().reason,
                         "no task running (task: non-zero exit (137)); Swarm is restarting it")
        self.assertEqual(world.transitions()[-1], ("agent.degraded", "ready", "degraded"))

    def test_ready_again_once_a_task_runs_and_the_probe_passes(self):
        world = self.world()
        world.prober.healthy = False
        world.swarm.kill_tasks("alpha")
        world.settle()
        world.swarm.run_tasks("alpha")  # Swarm restarted it; not answering yet
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        world.prober.healthy = True
        world.clock.advance(0.05)
        self.assertIs(world.agent().state, AgentState.READY)
        self.assertEqual(world.transitions()[-1], ("agent.recovered", "degraded", "ready"))
        self.assertEqual(world.swarm.scale_calls, [])

    def test_degraded_agent_is_still_routed(self):
        world = self.world()
        world.swarm.kill_tasks("alpha")
        world.settle()
        self.assertIs(world.agent().admit(ignored=False), Admission.FORWARD)

    def test_death_reported_before_swarm_records_it_degrades_at_once(self):
        world = self.world()
        [task] = self.successResultOf(world.swarm.status("alpha")).running_tasks
        died = SwarmEvent("alpha", "container", "die", task.id, 137)
        world.agent().service_changed([died])  # Swarm still shows it running
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn(f"task {task.id} exited with code 137", world.agent().reason)
        world.swarm.kill_tasks("alpha")  # Swarm catches up
        world.clock.advance(SWARM_LAG_RETRY)
        self.assertIn("non-zero exit (137)", world.agent().reason)
        world.clock.advance(SWARM_LAG_RETRY * 10)
        self.assertFalse(world.agent()._dead_tasks)

    def test_start_reported_before_swarm_records_it_is_looked_at_again(self):
        world = make_world(("alpha", ALWAYS_ON), swarm=FakeSwarm(auto_run=False),
                           healthy=False)
        world.swarm.kill_tasks("alpha")
        world.settle()
        world.prober.healthy = True
        [pending] = [t for t in self.successResultOf(world.swarm.status("alpha")).tasks
                     if t.live]
        started = SwarmEvent("alpha", "container", "start", pending.id)
        world.agent().service_changed([started])  # Swarm still shows it pending
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        world.swarm.run_tasks("alpha")  # Swarm catches up (its own event is not heard)
        world.swarm._subscriptions.clear()
        world.clock.advance(SWARM_LAG_RETRY)
        world.clock.advance(0.05)
        self.assertIs(world.agent().state, AgentState.READY)

    def test_task_that_died_while_swarm_showed_it_starting_is_not_taken_for_running(self):
        world = self.world()
        world.swarm.kill_tasks("alpha")
        world.settle()
        [pending] = [t for t in self.successResultOf(world.swarm.status("alpha")).tasks
                     if t.live]
        world.agent().service_changed([SwarmEvent("alpha", "container", "start", pending.id),
                                       SwarmEvent("alpha", "container", "die", pending.id, 1)])
        world.swarm._subscriptions.clear()
        world.swarm.run_tasks("alpha")  # Swarm, behind, now shows the dead task running
        world.clock.advance(SWARM_LAG_RETRY)
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("exited with code 1", world.agent().reason)

    def test_swarm_that_never_catches_up_is_given_up_on(self):
        world = self.world()
        [task] = self.successResultOf(world.swarm.status("alpha")).running_tasks
        world.agent().service_changed([SwarmEvent("alpha", "container", "die", task.id, 1)])
        world.clock.pump([SWARM_LAG_RETRY] * (SWARM_LAG_LOOKS + 2))
        self.assertFalse(world.agent()._dead_tasks)
        self.assertFalse(world.agent()._lag_timer.active())

    def test_exhausted_restarts_are_reported_once_and_the_agent_stays_degraded(self):
        world = make_world(("alpha", {**ALWAYS_ON, "max_attempts": 2}),
                           swarm=FakeSwarm(auto_run=True))
        world.prober.healthy = False
        world.swarm.force_update("alpha", exits_at_once=True)
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        [exhausted] = [e for e in world.bus.events if e.type == "restart.exhausted"]
        self.assertEqual(exhausted.agent, "alpha")
        self.assertEqual(exhausted.fields, {"service": "alpha", "attempts": 3,
                                            "max_attempts": 2,
                                            "error": "task: non-zero exit (1)"})
        world.clock.pump([10] * 5)  # the health loop reads Swarm too: still one report
        self.assertEqual(world.bus.types().count("restart.exhausted"), 1)
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("no task running", world.agent().reason)

    def test_fixed_service_after_exhaustion_recovers(self):
        world = make_world(("alpha", {**ALWAYS_ON, "max_attempts": 1}))
        world.swarm.force_update("alpha", exits_at_once=True)
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        world.swarm.force_update("alpha", exits_at_once=False)
        world.settle()
        self.assertIs(world.agent().state, AgentState.READY)
        self.assertEqual(world.bus.types()[-1], "agent.recovered")

    def test_dead_task_is_seen_by_the_health_poll_without_any_event(self):
        world = self.world()
        world.watcher.stopService()
        world.prober.healthy = False
        world.swarm.kill_tasks("alpha")
        world.clock.advance(10)  # one failed probe, not three: Swarm says why
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("non-zero exit (137)", world.agent().reason)

    def test_scaled_to_zero_by_someone_is_degraded_until_scaled_up(self):
        world = self.world()
        world.swarm.scale("alpha", 0)
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("scaled to 0", world.agent().reason)
        world.swarm.scale("alpha", 1)
        world.swarm.run_tasks("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.READY)

    def test_task_replaced_while_starting_keeps_the_agent_starting(self):
        world = make_world(("alpha", ALWAYS_ON), swarm=FakeSwarm(auto_run=False),
                           healthy=False)
        self.assertIs(world.agent().state, AgentState.STARTING)
        world.swarm.force_update("alpha")  # a new task on its way; nothing failed
        world.settle()
        self.assertIs(world.agent().state, AgentState.STARTING)

    def test_task_dead_while_starting_degrades(self):
        world = make_world(("alpha", ALWAYS_ON), swarm=FakeSwarm(auto_run=False),
                           healthy=False)
        world.swarm.kill_tasks("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)


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
        self.assertIn("non-zero exit (137)", body["reason"])
        self.assertIn("unreachable", body["error"])
        self.assertEqual(harness.fixture.swarm.scale_calls, [])

    def test_answering_backend_is_forwarded_while_degraded(self):
        harness = ProxyHarness(replicas=1, swarm=FakeSwarm(auto_run=False),
                               policy=Policy.ALWAYS_ON)
        harness.fixture.swarm.kill_tasks("alpha")
        harness.agent.service_changed()
        self.assertIs(harness.agent.state, AgentState.DEGRADED)
        self.assertEqual(harness.get().code, 200)


class OnDemandTaskDeathTests(SynchronousTestCase):
    def awake(self, **service) -> World:
        world = make_world(("alpha", service), swarm=FakeSwarm(auto_run=False))
        world.agent().admit(ignored=False)
        world.swarm.run_tasks("alpha")
        world.settle()
        world.clock.advance(0.05)
        self.assertIs(world.agent().state, AgentState.READY)
        return world

    def test_dead_task_of_a_ready_agent_degrades_then_recovers(self):
        world = self.awake()
        world.prober.healthy = False
        world.swarm.kill_tasks("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        world.prober.healthy = True
        world.swarm.run_tasks("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.READY)
        self.assertEqual(world.transitions()[-2:], [("agent.degraded", "ready", "degraded"),
                                                    ("agent.recovered", "degraded", "ready")])

    def test_recovered_agent_still_sleeps_when_idle(self):
        world = self.awake()
        world.swarm.kill_tasks("alpha")
        world.settle()
        world.swarm.run_tasks("alpha")
        world.settle()
        world.clock.advance(900)
        self.assertIs(world.agent().state, AgentState.SLEEPING)

    def test_exhausted_restarts_scale_to_zero_and_a_later_request_wakes_afresh(self):
        world = self.awake(max_attempts=1)
        world.prober.healthy = False
        world.swarm.auto_run = True
        world.swarm.force_update("alpha", exits_at_once=True)
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("restart.exhausted", world.bus.types())
        self.assertEqual(world.swarm.scale_calls, [("alpha", 1), ("alpha", 0)])
        self.assertIs(world.agent().admit(ignored=False), Admission.REJECT)
        world.clock.advance(30)  # wake_retry
        self.assertIs(world.agent().admit(ignored=False), Admission.WAKE)

    def test_scaled_to_zero_elsewhere_is_asleep(self):
        world = self.awake()
        world.swarm.scale("alpha", 0)
        world.settle()
        self.assertIs(world.agent().state, AgentState.SLEEPING)
        self.assertFalse(world.agent().backend_running)
        self.assertEqual(world.bus.events[-1].fields["reason"],
                         "scaled to 0 outside the orchestrator")
        self.assertIs(world.agent().admit(ignored=False), Admission.WAKE)

    def test_our_own_scale_down_is_not_news(self):
        world = self.awake()
        world.clock.advance(900)
        world.settle()
        self.assertIs(world.agent().state, AgentState.SLEEPING)
        self.assertEqual(world.bus.types()[-1], "agent.sleep")

    def test_removed_service_degrades_and_a_new_one_puts_it_to_sleep(self):
        world = make_world()
        world.swarm.remove_service("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("no Swarm service named 'alpha'", world.agent().reason)
        world.swarm.add_service("alpha", replicas=0)
        world.settle()
        self.assertIs(world.agent().state, AgentState.SLEEPING)

    def test_failed_wake_stays_degraded_whatever_swarm_says(self):
        world = make_world(swarm=FakeSwarm(auto_run=False))
        world.agent().admit(ignored=False)
        world.swarm.fail_tasks("alpha", "No such image: agent:1")
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        world.swarm.force_update("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.DEGRADED)
        self.assertIn("No such image", world.agent().reason)

    def test_task_start_cuts_a_slow_wakes_pause_short(self):
        world = make_world(swarm=FakeSwarm(auto_run=False))
        world.agent().admit(ignored=False)
        world.clock.pump([0.05] * 100 + [0.25] * 40 + [0.5])  # 15.5 s: looks every second
        world.swarm.run_tasks("alpha")
        world.settle()
        self.assertIs(world.agent().state, AgentState.READY)

    def test_stop_during_a_recovery_probe_ends_it(self):
        world = make_world(("alpha", ALWAYS_ON), swarm=FakeSwarm(auto_run=False))
        world.swarm.kill_tasks("alpha")
        world.settle()
        world.prober.probe = answering_when_cancelled
        world.swarm.run_tasks("alpha")
        world.settle()  # the recovery probes; its probe hangs
        world.watcher.stopService()
        world.agent().stop()  # the probe, cancelled, fires with a result, as HttpProber's
        self.assertEqual(world.clock.getDelayedCalls(), [])
        self.assertIs(world.agent().state, AgentState.DEGRADED)

    def test_stop_cancels_the_reading_and_its_timers(self):
        world = make_world(("alpha", ALWAYS_ON))
        [task] = self.successResultOf(world.swarm.status("alpha")).running_tasks
        world.agent().service_changed([SwarmEvent("alpha", "container", "die", task.id, 1)])
        world.watcher.stopService()
        world.agent().stop()
        self.assertEqual(world.clock.getDelayedCalls(), [])


class AlwaysOnFlappingTests(SynchronousTestCase):
    """
    The always-on policy driven by the clock: health flaps, events follow, and nothing is
    ever scaled.
    """

    def test_flapping_health_produces_the_documented_events_and_no_scale_call(self):
        world = make_world(("alpha", {**ALWAYS_ON,
                                      "health": HealthConfig(interval=10, failures=3)}))
        script = [True, False, False, True, False, False, False, False, True, True, False]
        for healthy in script:
            world.prober.healthy = healthy
            world.clock.advance(10)
        types = [t for t in world.bus.types("alpha") if t != "agent.reconciled"]
        self.assertEqual(types, [
            "agent.ready",
            "agent.health_failed", "agent.health_failed",
            "agent.health_failed", "agent.health_failed",
            "agent.health_failed", "agent.degraded",
            "agent.health_failed",
            "agent.recovered",
            "agent.health_failed",
        ])
        consecutive = [e.fields["consecutive"] for e in world.bus.events
                       if e.type == "agent.health_failed"]
        self.assertEqual(consecutive, [1, 2, 1, 2, 3, 4, 1])
        self.assertEqual(world.swarm.scale_calls, [])
        self.assertIs(world.agent().state, AgentState.READY)


# The state machine -----------------------------------------------------------------------


class AgentStateMachine(RuleBasedStateMachine):
    """
    Random sequences of requests, task runs and failures, probe results, time, idleness
    and engine events, driving a real agent (and the watcher) against the fake Swarm.
    Whatever happens: the state is always one of the four, every change of state comes
    with exactly one event naming an allowed transition, an always-on agent is never
    scaled, and nothing logs an error.
    """

    @initialize(policy=st.sampled_from(Policy), max_attempts=st.sampled_from([0, 2]))
    def start(self, policy, max_attempts):
        self.errors = []
        globalLogPublisher.addObserver(self._observe)
        self.policy = policy
        replicas = 1 if policy is Policy.ALWAYS_ON else 0
        self.world = make_world(("alpha", {"policy": policy, "replicas": replicas,
                                           "max_attempts": max_attempts}),
                                swarm=FakeSwarm(auto_run=False))
        self.checked_events = 0
        self.expected_state = self.world.agent().state

    def _observe(self, event):
        if event.get("isError"):
            self.errors.append(event)

    def teardown(self):
        globalLogPublisher.removeObserver(self._observe)
        if hasattr(self, "world"):
            self.world.watcher.stopService()
            self.world.agent().stop()

    @property
    def agent(self) -> Agent:
        return self.world.agent()

    @rule(ignored=st.booleans())
    def request(self, ignored):
        self.agent.admit(ignored)

    @rule()
    def activity(self):
        self.agent.request_started()
        self.agent.request_finished()

    @rule()
    def tasks_run(self):
        self.world.swarm.run_tasks("alpha")

    @rule()
    def tasks_fail_to_start(self):
        self.world.swarm.fail_tasks("alpha", "No such image: agent:1")

    @rule()
    def tasks_die(self):
        self.world.swarm.kill_tasks("alpha")

    @rule()
    def command_breaks(self):
        self.world.swarm.force_update("alpha", exits_at_once=True)

    @rule()
    def command_fixed(self):
        self.world.swarm.force_update("alpha", exits_at_once=False)

    @rule(healthy=st.booleans())
    def probes(self, healthy):
        self.world.prober.healthy = healthy

    @rule(seconds=st.sampled_from([0, 0.05, 0.25, 1, 10, 30, 60, 900]))
    def time_passes(self, seconds):
        self.world.clock.advance(seconds)

    @rule()
    def engine_goes_away(self):
        self.world.swarm.available = False
        self.world.swarm.end_event_streams()

    @rule()
    def engine_comes_back(self):
        self.world.swarm.available = True

    @invariant()
    def state_is_valid_and_each_change_has_one_event(self):
        if not hasattr(self, "world"):
            return
        events = [e for e in self.world.bus.events if e.agent == "alpha"]
        for event in events[self.checked_events:]:
            if event.type == "agent.reconciled":
                self.expected_state = AgentState(event.fields["state"])
            elif "previous" in event.fields:
                old = AgentState(event.fields["previous"])
                new = AgentState(event.fields["state"])
                assert old is self.expected_state, (event, self.expected_state)
                assert TRANSITIONS[(old, new)] == event.type, event
                self.expected_state = new
        self.checked_events = len(events)
        assert isinstance(self.agent.state, AgentState)
        assert self.agent.state is self.expected_state, (self.agent.state, events[-3:])

    @invariant()
    def always_on_is_never_scaled(self):
        if hasattr(self, "world") and self.policy is Policy.ALWAYS_ON:
            assert self.world.swarm.scale_calls == [], self.world.swarm.scale_calls

    @invariant()
    def nothing_logs_an_error(self):
        if hasattr(self, "world"):
            assert not self.errors, self.errors


class AgentStateMachineTests(SynchronousTestCase):
    def test_random_sequences_keep_to_the_state_table(self):
        run_state_machine_as_test(AgentStateMachine)


