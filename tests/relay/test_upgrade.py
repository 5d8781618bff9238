"""
Opening a relayed socket (orchestrator.relay.upgrade and the opening of
orchestrator.relay.socket): the handshake the agent gets, the client's handshake waiting
for the agent's, refusals (origin, socket cap, sleeping agent, unreachable or slow
agent), and the takeover from twisted.web.
"""

from __future__ import annotations

import json

from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from orchestrator.config.model import (
    Backend,
    ProxyConfig,
)
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.interfaces import IRequestHandler
from orchestrator.proxy.frontdoor import FrontDoorChannel
from orchestrator.relay.upgrade import WebSocketRelay
from orchestrator.states import AgentState
from tests.helpers import (
    HeldSwarm,
)
from tests.relay.harness import (
    CLIENT_KEY,
    RelayHarness,
    accept_key,
    agent_with,
    http_head,
    http_request_head,
    upgrade_request,
)

# Opening. -----------------------------------------------------------------------------


class HandshakeTests(SynchronousTestCase):
    def test_agent_gets_the_clients_path_credentials_and_subprotocols(self):
        harness = RelayHarness()
        harness.upgrade(upgrade_request(path=b"/ws?room=7", extra=(
            b"Cookie: session=abc\r\nAuthorization: Bearer xyz\r\n"
            b"Origin: https://alpha.example.com\r\nUser-Agent: Mozilla/5.0\r\n"
            b"Sec-WebSocket-Protocol: chat, Superchat\r\n")))
        backend = harness.accept_backend()
        request = backend.received()
        self.assertTrue(request.startswith(b"GET /ws?room=7 HTTP/1.1\r\n"))
        headers = http_head(request)[1]
        self.assertEqual(headers[b"host"], b"alpha.example.com")
        self.assertEqual(headers[b"cookie"], b"session=abc")
        self.assertEqual(headers[b"authorization"], b"Bearer xyz")
        self.assertEqual(headers[b"origin"], b"https://alpha.example.com")
        self.assertEqual(headers[b"user-agent"], b"Mozilla/5.0")
        self.assertEqual(headers[b"sec-websocket-protocol"], b"chat,Superchat")
        self.assertEqual(headers[b"x-forwarded-for"], b"203.0.113.9")
        self.assertNotEqual(headers[b"sec-websocket-key"], CLIENT_KEY)

    def test_an_absolute_form_upgrade_tells_the_agent_the_targets_host(self):
        harness = RelayHarness()
        harness.upgrade(upgrade_request(path=b"http://alpha.example.com/ws",
                                        host=b"attacker.example",
                                        extra=b"X-Forwarded-Host: attacker.example\r\n"))
        request = harness.accept_backend().received()
        self.assertTrue(request.startswith(b"GET /ws HTTP/1.1\r\n"))
        headers = http_head(request)[1]
        self.assertEqual(headers[b"host"], b"alpha.example.com")
        self.assertEqual(headers[b"x-forwarded-host"], b"alpha.example.com")

    def test_spoofable_headers_do_not_reach_the_agents_handshake(self):
        harness = RelayHarness()
        harness.upgrade(upgrade_request(extra=b"X-Real-IP: 1.2.3.4\r\nForwarded: for=1\r\n"
                                              b"X_Forwarded_For: 1.2.3.4\r\n"))
        headers = http_head(harness.accept_backend().received())[1]
        for name in (b"x-real-ip", b"forwarded", b"x_forwarded_for"):
            self.assertNotIn(name, headers)

    def test_an_unsupported_version_is_426_naming_13(self):
        for version in (b"8", b"12", b"14", b"x"):
            with self.subTest(version=version):
                harness = RelayHarness()
                request = upgrade_request().replace(b"Sec-WebSocket-Version: 13",
                                                    b"Sec-WebSocket-Version: " + version)
                client = harness.upgrade(request)
                status, headers, body = http_head(client.received())
                self.assertEqual(status, 426)
                self.assertEqual(headers[b"sec-websocket-version"], b"13")
                self.assertIn("version", json.loads(body)["error"])
                self.assertEqual(harness.network.pending(), [])

    def test_a_missing_version_is_400(self):
        harness = RelayHarness()
        client = harness.upgrade(upgrade_request().replace(b"Sec-WebSocket-Version: 13\r\n", b""))
        self.assertEqual(http_head(client.received())[0], 400)

    def test_client_handshake_waits_for_the_agents(self):
        harness = RelayHarness()
        client = harness.upgrade()
        backend = harness.accept_backend()
        self.assertEqual(client.received(), b"")
        harness.answer_handshake(backend)
        status, headers, _ = http_head(client.received())
        self.assertEqual(status, 101)
        self.assertEqual(headers[b"sec-websocket-accept"], accept_key(CLIENT_KEY))

    def test_client_gets_the_subprotocol_the_agent_chose(self):
        harness = RelayHarness()
        client = harness.upgrade(upgrade_request(extra=b"Sec-WebSocket-Protocol: a, b\r\n"))
        backend = harness.accept_backend()
        harness.answer_handshake(backend, subprotocol=b"b")
        self.assertEqual(http_head(client.received())[1][b"sec-websocket-protocol"], b"b")

    def test_client_gets_the_agents_end_to_end_headers(self):
        harness = RelayHarness()
        client = harness.upgrade()
        backend = harness.accept_backend()
        key = http_head(backend.received())[1][b"sec-websocket-key"]
        backend.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade, X-Per-Hop\r\nSec-WebSocket-Accept: " + accept_key(key)
                     + b"\r\nSet-Cookie: a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\n"
                     b"Set-Cookie: b=2\r\nX-Agent: dutybound\r\nX-Per-Hop: no\r\n"
                     b"Keep-Alive: timeout=5\r\nServer: agent/1\r\n\r\n")
        answer = client.received()
        self.assertEqual(http_head(answer)[0], 101)
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        self.assertIn(b"\r\nset-cookie: a=1; expires=wed, 21 oct 2026 07:28:00 gmt\r\n"
                      b"set-cookie: b=2\r\n", head)
        self.assertIn(b"\r\nx-agent: dutybound\r\n", head)
        for dropped in (b"x-per-hop", b"keep-alive", b"agent/1"):
            self.assertNotIn(dropped, head)
        self.assertEqual(head.count(b"sec-websocket-accept"), 1)

    def test_agent_refusing_the_handshake_passes_its_status(self):
        harness = RelayHarness()
        client = harness.upgrade()
        backend = harness.accept_backend()
        backend.received()
        backend.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        backend.vanish()
        status, headers, body = http_head(client.received())
        self.assertEqual(status, 403)
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertIn("refused the WebSocket handshake", json.loads(body)["error"])
        self.assertTrue(client.closed)

    def test_unreachable_agent_is_502(self):
        harness = RelayHarness()
        client = harness.upgrade()
        harness.network.refuse(ConnectionRefusedError())
        status, _, body = http_head(client.received())
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(body), {
            "error": "agent alpha is unreachable: connection refused",
            "status": "ready", "agent": "alpha"})
        self.assertTrue(client.closed)

    def test_agent_not_accepting_in_time_is_504(self):
        harness = RelayHarness()
        client = harness.upgrade()
        harness.network.refuse(TimeoutError())
        self.assertEqual(http_head(client.received())[0], 504)

    def test_agent_handshake_slower_than_the_timeout_is_504(self):
        harness = RelayHarness()
        client = harness.upgrade()
        backend = harness.accept_backend()
        harness.clock.advance(9.9)
        self.assertEqual(client.received(), b"")
        harness.clock.advance(0.1)
        status, _, body = http_head(client.received())
        self.assertEqual(status, 504)
        self.assertIn("within 10s", json.loads(body)["error"])
        self.assertTrue(backend.closed)

    def test_client_leaving_during_the_handshake_drops_the_agents(self):
        harness = RelayHarness()
        client = harness.upgrade()
        backend = harness.accept_backend()
        client.vanish()
        self.assertTrue(backend.closed)
        backend.vanish()
        self.assertEqual(len(harness.agent.connections), 0)

    def test_origin_not_allowed_is_403_and_the_agent_is_not_asked(self):
        harness = RelayHarness(**agent_with(allowed_origins=("https://app.example.com",)))
        client = harness.upgrade(upgrade_request(extra=b"Origin: https://evil.example\r\n"))
        status, _, body = http_head(client.received())
        self.assertEqual(status, 403)
        self.assertIn("https://evil.example", json.loads(body)["error"])
        self.assertEqual(harness.network.pending(), [])

    def test_allowed_origin_is_relayed(self):
        harness = RelayHarness(**agent_with(allowed_origins=("https://app.example.com",)))
        harness.upgrade(upgrade_request(extra=b"Origin: https://app.example.com\r\n"))
        self.assertEqual(len(harness.network.pending()), 1)

    def test_sockets_beyond_the_cap_get_503(self):
        harness = RelayHarness(**agent_with(max_connections=2))
        harness.open()
        harness.open()
        client = harness.upgrade()
        status, headers, _ = http_head(client.received())
        self.assertEqual((status, headers[b"retry-after"]), (503, b"3"))
        self.assertEqual(harness.network.pending(), [])

    def test_sleeping_agent_gets_503_and_is_woken(self):
        harness = RelayHarness(replicas=0, swarm=HeldSwarm())
        client = harness.upgrade()
        status, headers, body = http_head(client.received())
        self.assertEqual((status, headers[b"retry-after"]), (503, b"3"))
        self.assertEqual(json.loads(body)["status"], "starting")
        self.assertEqual(harness.agent.state, AgentState.STARTING)
        self.assertEqual([replicas for _, _, replicas in harness.fixture.swarm.held], [1])
        self.assertEqual(harness.network.pending(), [])

    def test_request_that_is_no_upgrade_goes_to_the_http_proxy(self):
        harness = RelayHarness()
        harness.upgrade(upgrade_request(connection=b"keep-alive"))
        _, transport = harness.network.accept()
        status_line, headers, _ = http_request_head(transport.value())
        self.assertEqual(status_line, b"GET /ws HTTP/1.1")
        self.assertNotIn(b"upgrade", headers)

    def test_keep_alive_upgrade_is_relayed(self):
        harness = RelayHarness()
        harness.upgrade(upgrade_request(connection=b"keep-alive, Upgrade"))
        backend = harness.accept_backend()
        self.assertEqual(http_request_head(backend.received())[1][b"upgrade"].lower(),
                         b"websocket")

    def test_the_upgrade_is_a_request_handler(self):
        harness = RelayHarness()
        request = DummyRequest([b"ws"])
        request.isSecure = lambda: False
        relay = WebSocketRelay(ProxyConfig(), harness.clock, BackendEndpoints(harness.clock, 5))
        handler = relay.relay(request, harness.agent, harness.agent.config.backend,
                              b"alpha.example.com", b"/ws", ignored=False,
                              client=("203.0.113.9", False))
        self.assertTrue(verifyObject(IRequestHandler, handler))

    def test_taken_over_socket_leaves_the_site_for_the_agents_registry(self):
        harness = RelayHarness()
        client, _ = harness.open()
        self.assertEqual(len(harness.site.channels), 0)
        self.assertEqual(len(harness.agent.connections), 1)
        self.assertNotIsInstance(client.transport.producer, FrontDoorChannel)


class RegisteredRouteTests(SynchronousTestCase):
    def test_a_websocket_to_a_registered_host_goes_to_its_own_backend(self):
        harness = RelayHarness(hosts=("alpha.example.com", "*.alpha.example.com"))
        harness.routes.register("alpha", "notebook.alpha.example.com",
                                Backend("http", "127.0.0.1", 8888), harness.clock.seconds())
        harness.upgrade(upgrade_request(host=b"notebook.alpha.example.com"))
        self.assertEqual(harness.network.pending(), [("127.0.0.1", 8888)])
