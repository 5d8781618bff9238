"""
The service tree's phased stop: stop accepting, drain connections within the shutdown
drain timeout, never scale anything.
"""

import json
from io import StringIO

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import Config, ListenConfig, ShutdownConfig
from orchestrator.service import OrchestratorService
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm

from .helpers import ScriptedProber, agent_config, connect_client


def running_service(replicas=1):
    clock = MemoryReactorClock()
    swarm = FakeSwarm()
    swarm.add_service("alpha", replicas=replicas)
    config = Config(source="test.yaml", agents=(agent_config(),),
                    listen=ListenConfig(proxy="tcp:8080", admin="tcp:9090"),
                    shutdown=ShutdownConfig(drain_timeout=30))
    service = OrchestratorService(config, swarm=swarm, reactor=clock, prober=ScriptedProber())
    service.startService()
    return service, swarm, clock


def connect(service):
    return connect_client(service.proxy_site)


class ServiceTreeTests(SynchronousTestCase):
    def test_start_listens_on_both_ports_and_reconciles(self):
        service, _, clock = running_service()
        self.assertEqual(sorted(port for port, *_ in clock.tcpServers), [8080, 9090])
        self.assertIs(service.agents["alpha"].state, AgentState.READY)

    def test_stop_with_no_connections_finishes_at_once(self):
        service, _, _ = running_service()
        self.successResultOf(service.stopService())
        self.assertFalse(service.running)

    def test_idle_keep_alive_connection_is_closed_at_once(self):
        service, _, _ = running_service()
        channel, transport = connect(service)
        stopping = service.stopService()
        self.assertTrue(transport.disconnecting)
        channel.connectionLost(None)
        self.successResultOf(stopping)

    def test_in_flight_request_holds_the_stop_until_the_drain_timeout(self):
        service, _, clock = running_service()
        channel, transport = connect(service)
        channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        stopping = service.stopService()
        clock.advance(29)
        self.assertNoResult(stopping)
        self.assertFalse(transport.disconnecting)  # still answering the request
        clock.advance(1)
        self.successResultOf(stopping)

    def test_shutdown_never_scales(self):
        service, swarm, clock = running_service(replicas=0)
        service.agents["alpha"].admit(ignored=False)
        clock.advance(1)
        self.successResultOf(service.stopService())
        clock.advance(10_000)
        self.assertEqual(swarm.scale_calls, [("alpha", 1)])


class PluginTests(SynchronousTestCase):
    def test_bad_config_exits_2_with_one_line_per_problem_and_no_traceback(self):
        from twisted.plugins.orchestrator_plugin import Options

        path = self.mktemp()
        with open(path, "w") as f:
            f.write("agents:\n  a:\n    backend: nope\n    hosts: [a.example.com]\n    idel: {}\n")
        stderr = StringIO()
        self.patch(__import__("sys"), "stderr", stderr)
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path])
        self.assertEqual(error.code, 2)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(all(line.startswith(path + ": agents.a.") for line in lines), lines)
        self.assertNotIn("Traceback", stderr.getvalue())

    def test_config_is_required(self):
        from twisted.python.usage import UsageError

        from twisted.plugins.orchestrator_plugin import Options

        self.assertRaises(UsageError, Options().parseOptions, [])

    def test_plugin_is_discoverable_by_twistd(self):
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("orchestrator", names)


class AgentApiWiringTests(SynchronousTestCase):
    """
    The agents' listener, end to end in memory: an agent registers a host there, and the
    proxy then relays that host to the agent's port.
    """

    TOKEN = "alpha-token-0123456789"

    def service(self):
        clock = MemoryReactorClock()
        swarm = FakeSwarm()
        swarm.add_service("alpha", replicas=1)
        agent = agent_config(hosts=("alpha.example.com", "*.alpha.example.com"),
                             token=self.TOKEN)
        config = Config(source="test.yaml", agents=(agent,),
                        listen=ListenConfig(proxy="tcp:8080", admin="tcp:9090",
                                            agents="tcp:8090"))
        service = OrchestratorService(config, swarm=swarm, reactor=clock,
                                      prober=ScriptedProber())
        service.startService()
        self.addCleanup(service.stopService)
        return service, clock

    def test_no_agents_listener_unless_configured(self):
        service, _, clock = running_service()
        self.assertIsNone(service.agent_api)

    def test_a_registered_host_is_served_by_the_proxy(self):
        service, clock = self.service()
        self.assertEqual(sorted(port for port, *_ in clock.tcpServers), [8080, 8090, 9090])
        body = json.dumps({"host": "preview.alpha.example.com", "port": 3000}).encode()
        channel, transport = connect_client(service.agents_site)
        channel.dataReceived(
            b"POST /api/services HTTP/1.1\r\nHost: orchestrator:8090\r\n"
            b"Authorization: Bearer " + self.TOKEN.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.assertIn(b"HTTP/1.1 201 Created", transport.value())
        channel, transport = connect(service)
        before = len(clock.tcpClients)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: preview.alpha.example.com\r\n\r\n")
        self.assertEqual(clock.tcpClients[before][:2], ("127.0.0.1", 3000))

    def test_an_oversized_body_is_refused(self):
        service, _ = self.service()
        channel, transport = connect_client(service.agents_site)
        body = b"x" * 20000
        channel.dataReceived(b"POST /api/lease HTTP/1.1\r\nHost: o\r\nAuthorization: Bearer "
                             + self.TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)
        self.assertIn(b"HTTP/1.1 413 ", transport.value())


class PrivateListenerTests(SynchronousTestCase):
    """
    The admin listener stands behind the same front door as the proxy (issue: it had no
    header deadline and kept any body).
    """

    def test_the_admin_listener_has_a_header_deadline(self):
        service, _, clock = running_service()
        channel, transport = connect_client(service.admin_site)
        channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        clock.advance(10)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_the_admin_listener_refuses_a_large_body(self):
        service, _, _ = running_service()
        channel, transport = connect_client(service.admin_site)
        body = b"x" * 20000
        channel.dataReceived(b"POST /api/agents/alpha/wake HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.assertIn(b"HTTP/1.1 413 ", transport.value())

    def test_the_admin_listener_still_answers(self):
        service, _, _ = running_service()
        channel, transport = connect_client(service.admin_site)
        channel.dataReceived(b"POST /api/agents/alpha/wake HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Length: 2\r\n\r\n{}")
        self.assertIn(b"HTTP/1.1 200 ", transport.value())


class DescriptorLimitTests(SynchronousTestCase):
    """
    Issue item 2: under systemd's default soft limit (1,024) idle sockets alone ran the
    process out of descriptors, and every new client was reset.
    """

    def limits(self, soft, hard, settable=True):
        import resource

        state = {"limit": (soft, hard)}

        def setrlimit(which, limit):
            self.assertEqual(which, resource.RLIMIT_NOFILE)
            if not settable:
                raise ValueError("not allowed")
            state["limit"] = limit

        return state, (lambda which: state["limit"]), setrlimit

    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        from orchestrator.service import raise_descriptor_limit

        state, get, set_ = self.limits(1024, 524288)
        self.assertEqual(raise_descriptor_limit(4096, getrlimit=get, setrlimit=set_), 524288)
        self.assertEqual(state["limit"], (524288, 524288))

    def test_a_limit_short_of_the_connections_is_warned_about(self):
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from orchestrator.service import raise_descriptor_limit

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _, get, set_ = self.limits(1024, 1024)
        self.assertEqual(raise_descriptor_limit(4096, getrlimit=get, setrlimit=set_), 1024)
        (event,) = [e for e in logged if e.get("event") == "orchestrator.descriptor_limit"]
        self.assertEqual(event["needed"], 2 * 4096 + 256)

    def test_a_refused_raise_keeps_the_soft_limit(self):
        from orchestrator.service import raise_descriptor_limit

        _, get, set_ = self.limits(1024, 65536, settable=False)
        self.assertEqual(raise_descriptor_limit(100, getrlimit=get, setrlimit=set_), 1024)
