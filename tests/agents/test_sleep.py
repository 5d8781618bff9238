"""
The idle sleep of an on-demand agent: the timer, the drain of its connections, activity
calling it off, the scale-down. A Clock and a fake Swarm.
"""

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import IdleConfig, Policy
from orchestrator.policy.admission import Admission
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import DrainableConnection, HeldSwarm, make_agent


class SleepTests(SynchronousTestCase):
    def awake(self, **config):
        fixture = make_agent(**config)
        fixture.agent.admit(ignored=False)
        fixture.clock.advance(0.05)
        self.assertIs(fixture.agent.state, AgentState.READY)
        return fixture

    def test_idle_agent_sleeps_after_the_timeout(self):
        fixture = self.awake()
        fixture.clock.advance(899)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1), ("alpha", 0)])
        self.assertEqual(fixture.bus.types()[-1], "agent.sleep")

    def test_activity_moves_the_sleep_back(self):
        fixture = self.awake()
        fixture.clock.advance(500)
        fixture.agent.request_started()
        fixture.agent.request_finished()
        fixture.clock.advance(400)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(500)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_request_in_flight_keeps_the_agent_awake(self):
        fixture = self.awake()
        fixture.agent.request_started()
        fixture.clock.advance(5000)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.agent.request_finished()
        fixture.clock.advance(900)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_open_connections_are_asked_to_go_away_then_aborted(self):
        fixture = self.awake(idle=IdleConfig(timeout=900, drain_timeout=30))
        connection = DrainableConnection(fixture.agent.connections)
        fixture.clock.advance(900)
        self.assertTrue(connection.asked)
        self.assertIs(fixture.agent.state, AgentState.READY)  # draining, still routable
        fixture.clock.advance(30)
        self.assertTrue(connection.aborted)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_activity_during_the_drain_calls_the_sleep_off(self):
        fixture = self.awake()
        DrainableConnection(fixture.agent.connections)
        fixture.clock.advance(900)
        fixture.agent.request_started()
        fixture.agent.request_finished()
        fixture.clock.advance(30)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1)])

    def test_request_during_scale_down_wakes_after_it(self):
        swarm = HeldSwarm()
        fixture = make_agent(swarm=swarm)
        fixture.agent.admit(ignored=False)
        swarm.release()
        fixture.clock.advance(0.05)
        fixture.clock.advance(900)  # idle: scale to 0 requested, not done yet
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertIs(fixture.agent.admit(ignored=False), Admission.WAKE)
        self.assertEqual([replicas for _, _, replicas in swarm.held], [0])
        swarm.release()  # scale-down completes; the wake goes on
        self.assertEqual([replicas for _, _, replicas in swarm.held], [1])
        swarm.release()
        fixture.clock.advance(0.05)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual(swarm.scale_calls, [("alpha", 1), ("alpha", 0), ("alpha", 1)])

    def test_an_agent_whose_probes_fail_still_sleeps_when_idle(self):
        # A hung agent: its task runs but does not answer. Degraded, yet idle: it must
        # not keep its replica (and its memory) forever.
        fixture = self.awake()
        fixture.prober.healthy = False
        fixture.clock.pump([10, 10, 11])  # three failed probes, 10 s apart
        self.assertIs(fixture.agent.state, AgentState.DEGRADED)
        fixture.clock.advance(870)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1), ("alpha", 0)])

    def test_an_ordered_sleep_drains_and_scales_down_whatever_the_activity(self):
        fixture = self.awake()
        connection = DrainableConnection(fixture.agent.connections)
        sleeping = fixture.agent.sleep(reason="admin")
        self.assertTrue(connection.asked)
        fixture.agent.touch()  # activity does not call an order off
        fixture.clock.advance(30)  # the drain timeout
        self.successResultOf(sleeping)
        self.assertTrue(connection.aborted)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        self.assertEqual(fixture.bus.events[-1].fields["reason"], "admin")
        self.assertEqual(fixture.swarm.scale_calls, [("alpha", 1), ("alpha", 0)])

    def test_an_ordered_sleep_during_a_wake_waits_for_it(self):
        fixture = make_agent(swarm=FakeSwarm(auto_run=False))
        fixture.agent.admit(ignored=False)
        sleeping = fixture.agent.sleep(reason="admin")
        self.assertNoResult(sleeping)
        fixture.swarm.run_tasks("alpha")
        fixture.clock.advance(0.05)
        self.successResultOf(sleeping)
        self.assertEqual([e.type for e in fixture.bus.events][-2:], ["agent.ready", "agent.sleep"])

    def test_an_always_on_agent_cannot_be_put_to_sleep(self):
        fixture = make_agent(replicas=1, policy=Policy.ALWAYS_ON)
        self.assertRaises(ValueError, fixture.agent.sleep, reason="admin")

    def test_an_agent_asleep_is_left_asleep(self):
        fixture = make_agent()
        self.successResultOf(fixture.agent.sleep(reason="admin"))
        self.assertEqual(fixture.bus.types(), ["agent.reconciled"])
