"""
Busy leases on a live agent: they keep an idle agent awake until the last one ends, and
no longer; they end with the agent's sleep. A Clock and a fake Swarm.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.agents.leases import AgentAsleep
from orchestrator.config.model import IdleConfig
from orchestrator.policy.leases import UnknownLease
from orchestrator.states import AgentState
from tests.helpers import make_agent


class LeaseTests(SynchronousTestCase):
    def awake(self):
        fixture = make_agent(idle=IdleConfig(timeout=900, drain_timeout=30, max_lease=3600))
        fixture.agent.admit(ignored=False)
        self.assertIs(fixture.agent.state, AgentState.READY)
        return fixture

    def test_a_lease_keeps_an_idle_agent_awake_until_it_ends_and_no_longer(self):
        fixture = self.awake()
        lease = fixture.agent.leases.acquire(seconds=1800, reason="long tool call")
        fixture.clock.advance(1799)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)
        types = fixture.bus.types()
        self.assertLess(types.index("agent.lease_expired"), types.index("agent.sleep"))
        acquired = fixture.bus.events[types.index("agent.lease_acquired")]
        self.assertEqual(acquired.fields, {"lease": lease.id, "reason": "long tool call",
                                           "seconds": 1800, "expires": 2800})

    def test_a_lease_asking_for_more_than_the_cap_gets_the_cap(self):
        fixture = self.awake()
        lease = fixture.agent.leases.acquire(seconds=86400, reason="")
        self.assertEqual(lease.expires - lease.acquired, 3600)

    def test_a_renewal_extends_and_a_short_one_does_not_shorten(self):
        fixture = self.awake()
        lease = fixture.agent.leases.acquire(seconds=1200, reason="")
        fixture.clock.advance(1000)
        self.assertEqual(fixture.agent.leases.renew(lease.id, seconds=60).expires, 2200)
        self.assertEqual(fixture.agent.leases.renew(lease.id, seconds=1800).expires, 3800)
        fixture.clock.advance(1799)
        self.assertIs(fixture.agent.state, AgentState.READY)
        fixture.clock.advance(1)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_releasing_the_last_lease_of_an_idle_agent_lets_it_sleep_at_once(self):
        fixture = self.awake()
        lease = fixture.agent.leases.acquire(seconds=3600, reason="")
        fixture.clock.advance(1000)
        fixture.agent.leases.release(lease.id)
        fixture.clock.advance(0)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_the_agent_follows_its_last_lease(self):
        fixture = self.awake()
        fixture.agent.leases.acquire(seconds=1000, reason="a")
        fixture.agent.leases.acquire(seconds=2000, reason="b")
        fixture.clock.advance(1000)
        self.assertIs(fixture.agent.state, AgentState.READY)
        self.assertEqual([lease.reason for lease in fixture.agent.status().leases], ["b"])
        fixture.clock.advance(1000)
        self.assertIs(fixture.agent.state, AgentState.SLEEPING)

    def test_leases_end_when_the_agent_is_put_to_sleep(self):
        fixture = self.awake()
        lease = fixture.agent.leases.acquire(seconds=3600, reason="")
        self.successResultOf(fixture.agent.sleep(reason="admin"))
        self.assertEqual(len(fixture.agent.leases.leases), 0)
        released = [e for e in fixture.bus.events if e.type == "agent.lease_released"]
        self.assertEqual(released[0].fields["lease"], lease.id)
        self.assertEqual(released[0].fields["why"], "the agent slept")
        self.assertEqual(fixture.clock.getDelayedCalls(), [])

    def test_a_sleeping_agent_takes_no_lease(self):
        fixture = make_agent()
        self.assertRaises(AgentAsleep, fixture.agent.leases.acquire, seconds=60, reason="")

    def test_unknown_leases_are_refused(self):
        fixture = self.awake()
        self.assertRaises(UnknownLease, fixture.agent.leases.renew, "nope", seconds=60)
        self.assertRaises(UnknownLease, fixture.agent.leases.release, "nope")

    def test_the_status_says_when_a_leased_agent_will_sleep(self):
        fixture = self.awake()
        fixture.agent.leases.acquire(seconds=3000, reason="")
        self.assertEqual(fixture.agent.status().sleeps_at, 1000 + 3000)
