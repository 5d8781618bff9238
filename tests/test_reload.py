"""
Reloading the configuration (SIGHUP): a bad file is refused whole and nothing changes;
a good one is applied live, agents keeping their state.
"""

import yaml
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.schema import load_config
from orchestrator.service import OrchestratorService
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm

from .helpers import DrainableConnection, ScriptedProber, connect_client


class Recorder:
    """
    An event consumer that keeps what it is given.
    """

    def __init__(self):
        self.events = []

    def consume(self, event):
        self.events.append(event)


def agent(host, **extra):
    return {"backend": "http://127.0.0.1:18081", "hosts": [host], **extra}


class ReloadTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.write(agents={"alpha": agent("alpha.example.com"),
                           "beta": agent("beta.example.com")})
        self.clock = MemoryReactorClock()
        self.swarm = FakeSwarm()
        for name in ("alpha", "beta", "gamma"):
            self.swarm.add_service(name, replicas=1)
        self.service = OrchestratorService(load_config(self.path), swarm=self.swarm,
                                           reactor=self.clock, prober=ScriptedProber())
        self.bus = Recorder()
        self.service.bus.subscribe(self.bus)
        self.service.startService()

    def write(self, **document):
        document.setdefault("listen", {"proxy": "tcp:8080", "admin": "tcp:9090"})
        with open(self.path, "w") as config:
            yaml.safe_dump(document, config)

    def events(self, kind):
        return [event for event in self.bus.events if event.type == kind]

    def test_added_and_removed_agents_are_routed_at_once(self):
        self.write(agents={"alpha": agent("alpha.example.com"),
                           "gamma": agent("gamma.example.com")})
        changes = self.service.reload()
        self.assertEqual((changes["added"], changes["removed"]), (["gamma"], ["beta"]))
        self.assertEqual(sorted(self.service.agents), ["alpha", "gamma"])
        self.assertIsNone(self.service.agents.match("beta.example.com"))
        self.assertIs(self.service.agents.match("gamma.example.com").state, AgentState.READY)
        self.assertEqual(len(self.events("config.reloaded")), 1)

    def test_changed_agent_keeps_its_state_and_takes_the_new_settings(self):
        alpha = self.service.agents["alpha"]
        self.write(agents={"alpha": agent("alpha.example.com", idle={"timeout": "1m"}),
                           "beta": agent("beta.example.com")})
        self.assertEqual(self.service.reload()["changed"], ["alpha"])
        self.assertIs(self.service.agents["alpha"], alpha)
        self.assertIs(alpha.state, AgentState.READY)
        self.clock.advance(60)
        self.assertIs(alpha.state, AgentState.SLEEPING)

    def test_the_admin_section_applies_live(self):
        self.write(agents={"alpha": agent("alpha.example.com"),
                           "beta": agent("beta.example.com")},
                   admin={"max_event_subscribers": 3, "event_buffer": 5, "max_wait": "10s"})
        self.service.reload()
        self.assertEqual(self.service.event_stream.max_subscribers, 3)
        self.assertEqual(self.service.admin.max_wait, 10.0)
        for _ in range(8):
            self.service.bus.emit("swarm.reconnected", None)
        self.assertEqual(len(self.service.event_buffer.recent()), 5)

    def test_a_host_can_move_between_agents(self):
        self.write(agents={"alpha": agent("beta.example.com"), "beta": agent("alpha.example.com")})
        self.service.reload()
        self.assertIs(self.service.agents.match("beta.example.com"), self.service.agents["alpha"])

    def test_bad_file_is_refused_whole_and_nothing_changes(self):
        self.write(agents={"alpha": agent("alpha.example.com", idle={"timeout": "soon"}),
                           "gamma": agent("gamma.example.com")})
        self.assertIsNone(self.service.reload())
        self.assertEqual(sorted(self.service.agents), ["alpha", "beta"])
        failed = self.events("config.reload_failed")
        self.assertEqual(len(failed), 1)
        self.assertIn('agents.alpha.idle.timeout: expected a duration like "15m", got "soon"',
                      failed[0].fields["problems"][0])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_listener_changes_wait_for_a_restart(self):
        self.write(listen={"proxy": "tcp:8081", "admin": "tcp:9090"},
                   agents={"alpha": agent("alpha.example.com"), "beta": agent("beta.example.com")})
        self.assertEqual(self.service.reload()["restart_needed"], ["listen"])
        self.assertEqual(self.service.config.listen.proxy, "tcp:8080")

    def test_proxy_settings_apply_to_new_requests(self):
        self.write(proxy={"retry_after": 7, "header_timeout": "2s"},
                   agents={"alpha": agent("alpha.example.com"), "beta": agent("beta.example.com")})
        self.service.reload()
        self.assertEqual(self.service.proxy_resource.config.retry_after, 7)
        self.assertEqual(self.service.proxy_site.header_timeout, 2)

    def test_the_front_doors_limits_apply_to_new_connections(self):
        self.write(proxy={"max_connections": 9, "max_connections_per_client": 3,
                          "send_timeout": "5s", "max_backend_connections": 7,
                          "max_buffered_bytes": "8KiB"},
                   agents={"alpha": agent("alpha.example.com"), "beta": agent("beta.example.com")})
        self.service.reload()
        site = self.service.proxy_site
        self.assertEqual((site.config.max_connections, site.config.max_connections_per_client,
                          site.config.send_timeout), (9, 3, 5))
        alpha = self.service.agents["alpha"]
        self.service.proxy_resource._clients.for_agent(alpha)
        self.assertEqual((alpha.pool.max_open, alpha.pool.buffer_bytes), (7, 4096))

    def test_removed_agent_is_never_scaled(self):
        self.write(agents={"alpha": agent("alpha.example.com")})
        self.service.reload()
        self.clock.advance(10_000)
        self.assertNotIn(("beta", 0), self.swarm.scale_calls)

    def test_websocket_settings_reach_the_relay(self):
        self.write(proxy={"websocket": {"handshake_timeout": "2s"}},
                   agents={"alpha": agent("alpha.example.com"), "beta": agent("beta.example.com")})
        self.service.reload()
        channel, transport = connect_client(self.service.proxy_site)
        channel.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: alpha.example.com\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        self.clock.advance(2)
        self.assertIn(b"within 2s", transport.value())

    def test_waiting_page_template_is_read_again(self):
        template = self.mktemp()
        with open(template, "w") as page:
            page.write("<p>first $agent</p>")
        # An uptime monitor's request: answered with the page, without waking the agent.
        sleepy = agent("gamma.example.com", cold_start={"page": template},
                       idle={"ignore_user_agents": ["UptimeRobot"]})
        self.swarm.scale("gamma", 0)
        self.write(agents={"alpha": agent("alpha.example.com"), "gamma": sleepy})
        self.service.reload()
        self.assertIn(b"<p>first gamma</p>", self.waiting_page("gamma.example.com"))
        with open(template, "w") as page:
            page.write("<p>second $agent</p>")
        self.service.reload()
        self.assertIn(b"<p>second gamma</p>", self.waiting_page("gamma.example.com"))

    def waiting_page(self, host: bytes | str) -> bytes:
        channel, transport = connect_client(self.service.proxy_site)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                             b"User-Agent: UptimeRobot\r\nAccept: text/html\r\n\r\n")
        return transport.value()

    def test_websockets_of_an_agent_removed_by_a_reload_are_drained_even_at_shutdown(self):
        socket = DrainableConnection(self.service.agents["beta"].connections)
        self.write(agents={"alpha": agent("alpha.example.com")})
        self.service.reload()
        self.assertTrue(socket.asked)  # told to go away (1001) when beta left
        stopping = self.service.stopService()
        self.assertNoResult(stopping)  # SIGTERM waits for it, as for any socket
        self.clock.advance(30)
        self.assertTrue(socket.aborted)
        self.successResultOf(stopping)
