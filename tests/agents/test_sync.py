"""
Keeping an agent in step with Swarm: reconciliation at start, and each agent's reaction
to the news (a dead task, a restart, exhausted restarts, a service gone), for both
policies. A fake Swarm and a Clock: nothing waits.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.probe import ProbeResult
from orchestrator.agents.sync import SWARM_LAG_LOOKS, SWARM_LAG_RETRY
from orchestrator.policy.admission import Admission
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from orchestrator.swarm.values import SwarmEvent
from tests.agents.world import ALWAYS_ON, World, make_world
from tests.helpers import make_agent


class ReconciliationTests(SynchronousTestCase):
    def test_service_at_zero_replicas_is_sleeping(self):
        fixture = make_agent(replicas=0)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertEqual(fixture.bus.types(), ["agent.reconciled"])

    def test_missing_service_is_degraded_with_a_clear_reason(self):
        fixture = make_agent(exists=False)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        self.assertIn("no Swarm service named 'alpha'", fixture.agent.reason)
        self.assertIn("agent.degraded", fixture.bus.types())

    def test_an_agent_already_degraded_is_not_announced_again(self):
        # The event stream's re-read and the reconciliation both find the service
        # missing: one agent.degraded, two reconciliations.
        fixture = make_agent(exists=False)
        fixture.agent.start()
        self.assertEqual(fixture.bus.types(), ["agent.reconciled", "agent.degraded",
                                               "agent.reconciled"])

    def test_running_service_stays_up_without_a_scale_call(self):
        fixture = make_agent(replicas=1)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(fixture.swarm.scale_calls, [])

    def test_running_service_idle_clock_starts_at_reconciliation(self):
        fixture = make_agent(replicas=1)
        fixture.clock.advance(899)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_unreachable_engine_degrades_then_retries(self):
        swarm = FakeSwarm()
        swarm.available = False
        fixture = make_agent(replicas=0, swarm=swarm)
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        swarm.available = True
        fixture.clock.advance(10)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)


def answering_when_cancelled(backend, path, timeout) -> Deferred:
    """
    A probe that never answers unless cancelled, when it fires with a failed result
    (never a failure), as L{orchestrator.agents.probe.HttpProber} does.
    """
    return Deferred(lambda probe: probe.callback(ProbeResult(False, "cancelled")))


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
        self.assertFalse(world.agent()._sync.lagging)

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
        self.assertFalse(world.agent()._sync.lagging)

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
