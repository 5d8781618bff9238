"""
The WebSocket relay. First in memory, with a clock: upgrade detection, the handshake the
agent gets, refusals, frames in both directions byte for byte, activity, drain and flow
control; the client and the agent are played by the test, frame by frame. Then over
loopback with the real reactor: Autobahn and websockets clients through the proxy to an
Autobahn echo server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct

import attrs
import websockets.sync.client
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, TimeoutError
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from orchestrator.agents.routes import RouteTable
from orchestrator.agents.runtime import Agent
from orchestrator.config.model import (
    AgentWebSocketConfig,
    Backend,
    IdleConfig,
    ProxyConfig,
    ProxyWebSocketConfig,
)
from orchestrator.config.readers import ConfigError
from orchestrator.config.schema import parse_config
from orchestrator.events.bus import EventBus
from orchestrator.http.endpoints import BackendEndpoints
from orchestrator.interfaces import IRequestHandler
from orchestrator.proxy.frontdoor import FrontDoorChannel, FrontDoorSite
from orchestrator.proxy.root import ProxyResource
from orchestrator.relay.handshake import (
    BackendHandshake,
    backend_handshake,
    handshake_answer_headers,
    is_websocket_upgrade,
    offered_subprotocols,
    origin_allowed,
)
from orchestrator.relay.upgrade import WebSocketRelay
from orchestrator.states import AgentState
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import (
    HeldSwarm,
    HttpPathLog,
    MemoryNetwork,
    RecordingClient,
    ScriptedProber,
    TCPLikeTransport,
    agent_config,
    inline,
    make_agent,
)
from tests.integration.engine import poll_until

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLIENT_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


# Frames, built and read by hand: the test is the peer, independent of Autobahn. -------


def frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bytes | None = b"abcd",
          length: int | None = None) -> bytes:
    """
    One frame as a client (masked) or a server (C{mask=None}) sends it.
    """
    length = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    flag = 0x80 if mask else 0
    if length < 126:
        header = bytes((first, flag | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, flag | 126, length)
    else:
        header = struct.pack("!BBQ", first, flag | 127, length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        header += mask
    return header + payload


def close_frame(code: int, reason: bytes = b"", mask: bytes | None = b"abcd") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason, mask=mask)


@attrs.frozen
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    masked: bool

    @property
    def close(self) -> tuple[int, bytes]:
        return struct.unpack("!H", self.payload[:2])[0], self.payload[2:]


def read_frames(data: bytes) -> list[Frame]:
    """
    The frames in C{data} (complete ones only), unmasked.
    """
    frames = []
    while len(data) >= 2:
        fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
        masked, length, at = bool(data[1] & 0x80), data[1] & 0x7F, 2
        if length == 126:
            (length,), at = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            (length,), at = struct.unpack("!Q", data[2:10]), 10
        mask = data[at:at + 4] if masked else None
        at += 4 if masked else 0
        if len(data) < at + length:
            break
        payload = data[at:at + length]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frames.append(Frame(fin, opcode, payload, masked))
        data = data[at + length:]
    return frames


def _frame_size(f: Frame) -> int:
    length = len(f.payload)
    header = 2 if length < 126 else 4 if length < 65536 else 10
    return header + (4 if f.masked else 0) + length


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade_request(path: bytes = b"/ws", host: bytes = b"alpha.example.com",
                    extra: bytes = b"", connection: bytes = b"Upgrade") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
            b"Connection: " + connection + b"\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + CLIENT_KEY + b"\r\n"
            + extra + b"\r\n")


def http_request_head(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """
    A request's line, its headers by lower-cased name, and what follows them.
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def http_head(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """
    The status (0 for a request), lower-cased headers and body of an HTTP message.
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    status = lines[0].split(b" ")[1]
    return int(status) if status.isdigit() else 0, headers, body


# The harness. -------------------------------------------------------------------------


class Peer:
    """
    One end of a relayed socket the test plays: what the relay wrote to it, and a way to
    send it data.
    """

    def __init__(self, transport: StringTransport) -> None:
        self.transport = transport
        self._read = 0
        self._partial = b""

    def received(self) -> bytes:
        """
        What arrived since the last call.
        """
        data = self.transport.value()[self._read:]
        self._read = len(self.transport.value())
        return data

    def frames(self) -> list[Frame]:
        """
        The frames completed since the last call.
        """
        data = self._partial + self.received()
        frames = read_frames(data)
        self._partial = data[sum(_frame_size(f) for f in frames):]
        return frames

    def send(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)

    def vanish(self) -> None:
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting or self.transport.disconnected


class RelayHarness:
    """
    The proxy listener in memory, with one agent whose backend the test plays: the
    relay's connection attempts wait in the MemoryReactor until the test accepts them.
    """

    def __init__(self, replicas: int = 1, config: ProxyConfig | None = None,
                 swarm=None, **agent_config) -> None:
        config = config or ProxyConfig(
            websocket=ProxyWebSocketConfig(handshake_timeout=10, ping_interval=0,
                                           ping_timeout=5))
        self.fixture = make_agent(replicas=replicas, swarm=swarm, **agent_config)
        self.agent = self.fixture.agent
        self.clock = self.fixture.clock
        self.clock.advance(0.1)
        self.network = MemoryNetwork(self.clock)
        routes = RouteTable()
        for host in self.agent.config.hosts:
            routes.add(host, self.agent, owner=self.agent.name)
        self.resource = ProxyResource(routes, config, clock=self.clock)
        self.site = FrontDoorSite(self.resource, header_timeout=config.header_timeout,
                                  max_header_bytes=config.max_header_bytes,
                                  idle_timeout=config.idle_connection_timeout,
                                  reactor=self.clock)

    def upgrade(self, request: bytes | None = None) -> Peer:
        """
        A client connects and sends an upgrade request.
        """
        address = IPv4Address("TCP", "203.0.113.9", 40000)
        protocol = self.site.buildProtocol(address)
        transport = TCPLikeTransport(peerAddress=address)
        transport.protocol = protocol  # as a real transport has: the takeover replaces it
        protocol.makeConnection(transport)
        protocol.dataReceived(request or upgrade_request())
        return Peer(transport)

    def accept_backend(self) -> Peer:
        """
        The agent accepts the TCP connection; its handshake request is then in the peer.
        """
        _, transport = self.network.accept()
        return Peer(transport)

    def answer_handshake(self, backend: Peer, subprotocol: bytes | None = None) -> None:
        request = backend.received()
        key = http_head(request)[1][b"sec-websocket-key"]
        extra = b"Sec-WebSocket-Protocol: " + subprotocol + b"\r\n" if subprotocol else b""
        backend.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key)
                     + b"\r\n" + extra + b"\r\n")

    def open(self, request: bytes | None = None) -> tuple[Peer, Peer]:
        """
        A relayed socket, both handshakes done: (client, agent).
        """
        client = self.upgrade(request)
        backend = self.accept_backend()
        self.answer_handshake(backend)
        status = http_head(client.received())[0]
        assert status == 101, status
        return client, backend

    @property
    def relayed(self):
        (relayed,) = list(self.agent.connections)
        return relayed


def agent_with(**websocket) -> dict:
    return {"websocket": AgentWebSocketConfig(**websocket)}


# Deciding. ----------------------------------------------------------------------------


tokens = st.from_regex(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True)
spacing = st.sampled_from([b",", b", ", b" ,  ", b",\t"])


def any_case(word: bytes):
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: bytes(
            c - 32 if up and 97 <= c <= 122 else c for c, up in zip(word, upper, strict=True)))


class UpgradeDetectionTests(SynchronousTestCase):
    def test_connection_keep_alive_upgrade_is_an_upgrade(self):
        headers = Headers({b"Connection": [b"keep-alive, Upgrade"], b"Upgrade": [b"websocket"]})
        self.assertTrue(is_websocket_upgrade(b"GET", headers))

    @given(st.lists(tokens, max_size=3), st.lists(tokens, max_size=3), any_case(b"upgrade"),
           any_case(b"websocket"), spacing, st.booleans())
    def test_upgrade_token_anywhere_in_any_case_and_spacing(self, before, after, upgrade,
                                                            websocket, separator, split):
        tokens = [*before, upgrade, *after]
        connection = [separator.join(tokens)] if not split else tokens
        headers = Headers({b"Connection": connection, b"Upgrade": [websocket]})
        self.assertTrue(is_websocket_upgrade(b"GET", headers))

    @given(st.lists(tokens.filter(lambda t: t.lower() != b"upgrade"), max_size=4), spacing)
    def test_no_upgrade_token_no_upgrade(self, connection, separator):
        headers = Headers({b"Connection": [separator.join(connection)],
                           b"Upgrade": [b"websocket"]})
        self.assertFalse(is_websocket_upgrade(b"GET", headers))

    def test_upgrade_to_another_protocol_is_not_a_websocket(self):
        headers = Headers({b"Connection": [b"Upgrade"], b"Upgrade": [b"h2c"]})
        self.assertFalse(is_websocket_upgrade(b"GET", headers))

    def test_only_get_upgrades(self):
        headers = Headers({b"Connection": [b"Upgrade"], b"Upgrade": [b"websocket"]})
        self.assertFalse(is_websocket_upgrade(b"POST", headers))

    def test_subprotocols_keep_their_order_and_case(self):
        headers = Headers({b"Sec-WebSocket-Protocol": [b"Chat.v2, json", b"MQTT"]})
        self.assertEqual(offered_subprotocols(headers), ("Chat.v2", "json", "MQTT"))


class OriginTests(SynchronousTestCase):
    allowed = ("https://app.example.com", "https://*.tools.example.com", "http://localhost:3000")

    def test_no_list_allows_any_origin(self):
        self.assertTrue(origin_allowed([b"https://evil.example"], ()))

    def test_listed_origin_is_allowed_in_any_case(self):
        self.assertTrue(origin_allowed([b"HTTPS://App.Example.com"], self.allowed))

    def test_default_port_is_the_same_origin(self):
        self.assertTrue(origin_allowed([b"https://app.example.com:443"], self.allowed))

    def test_other_port_is_another_origin(self):
        self.assertFalse(origin_allowed([b"http://localhost:3001"], self.allowed))

    def test_other_scheme_is_another_origin(self):
        self.assertFalse(origin_allowed([b"http://app.example.com"], self.allowed))

    def test_wildcard_matches_subdomains_only(self):
        self.assertTrue(origin_allowed([b"https://a.b.tools.example.com"], self.allowed))
        self.assertFalse(origin_allowed([b"https://tools.example.com"], self.allowed))
        self.assertFalse(origin_allowed([b"https://eviltools.example.com"], self.allowed))

    def test_missing_origin_is_allowed(self):
        self.assertTrue(origin_allowed(None, self.allowed))

    def test_two_origins_are_refused(self):
        self.assertFalse(origin_allowed([b"https://app.example.com"] * 2, self.allowed))

    def test_garbage_origin_is_refused(self):
        self.assertFalse(origin_allowed([b"not an origin"], self.allowed))

    def test_null_origin_only_when_listed(self):
        self.assertFalse(origin_allowed([b"null"], self.allowed))
        self.assertTrue(origin_allowed([b"null"], ("null",)))


class BackendHandshakeTests(SynchronousTestCase):
    def handshake(self, headers: dict, trusted: bool = False) -> BackendHandshake:
        return backend_handshake(b"/ws/chat?room=1&x=%20", Headers(headers),
                                 client_address="203.0.113.9", secure=True,
                                 host=b"alpha.example.com", trusted=trusted)

    def test_path_query_and_host_pass_unchanged(self):
        handshake = self.handshake({b"Host": [b"alpha.example.com"]})
        self.assertEqual((handshake.resource, handshake.host),
                         ("/ws/chat?room=1&x=%20", "alpha.example.com"))

    def test_credentials_origin_and_user_agent_pass(self):
        handshake = self.handshake({
            b"Cookie": [b"a=1", b"b=2"], b"Authorization": [b"Bearer t0ken"],
            b"Origin": [b"https://app.example.com"], b"User-Agent": [b"Mozilla/5.0"]})
        headers = dict(handshake.headers)
        self.assertEqual(headers["Cookie"], "a=1; b=2")
        self.assertEqual(headers["Authorization"], "Bearer t0ken")
        self.assertEqual((handshake.origin, handshake.user_agent),
                         ("https://app.example.com", "Mozilla/5.0"))

    def test_offered_subprotocols_pass_in_order(self):
        handshake = self.handshake({b"Sec-WebSocket-Protocol": [b"graphql-ws, json"]})
        self.assertEqual(handshake.protocols, ("graphql-ws", "json"))

    def test_forwarded_headers_are_ours_for_an_untrusted_client(self):
        handshake = self.handshake({b"X-Forwarded-For": [b"6.6.6.6"]})
        headers = dict(handshake.headers)
        self.assertEqual((headers["X-Forwarded-For"], headers["X-Forwarded-Proto"],
                          headers["X-Forwarded-Host"]),
                         ("203.0.113.9", "https", "alpha.example.com"))

    def test_forwarded_chain_is_kept_for_a_trusted_proxy(self):
        handshake = self.handshake({b"X-Forwarded-For": [b"198.51.100.1"]}, trusted=True)
        self.assertEqual(dict(handshake.headers)["X-Forwarded-For"], "198.51.100.1, 203.0.113.9")

    def test_the_clients_handshake_and_hop_headers_stay_behind(self):
        handshake = self.handshake({
            b"Connection": [b"Upgrade, X-Secret"], b"Upgrade": [b"websocket"],
            b"X-Secret": [b"1"], b"Sec-WebSocket-Key": [CLIENT_KEY],
            b"Sec-WebSocket-Version": [b"13"], b"Sec-WebSocket-Extensions": [b"permessage-deflate"],
            b"Host": [b"alpha.example.com"], b"Accept-Language": [b"de"]})
        names = {name.lower() for name, _ in handshake.headers}
        self.assertEqual(names, {"accept-language", "x-forwarded-for", "x-forwarded-proto",
                                 "x-forwarded-host"})

    def test_header_that_is_not_utf8_is_left_out(self):
        handshake = self.handshake({b"X-Name": [b"caf\xe9"]})
        self.assertNotIn("X-Name", dict(handshake.headers))


class ConfigTests(SynchronousTestCase):
    """
    The relay's keys in the configuration file: defaults, values, and mistakes.
    """

    def parse(self, text: str):
        return parse_config(text, "orchestrator.yaml")

    def test_defaults(self):
        config = self.parse("agents: {a: {backend: 'http://a:1', hosts: [a.example.com]}}")
        self.assertEqual(config.proxy.websocket, ProxyWebSocketConfig(
            handshake_timeout=10.0, ping_interval=30.0, ping_timeout=10.0))
        self.assertEqual(config.agent("a").websocket, AgentWebSocketConfig(
            allowed_origins=(), max_connections=1000, max_message_size=16 * 1024 * 1024))

    def test_values(self):
        config = self.parse("""
proxy: {websocket: {handshake_timeout: 5s, ping_interval: 0, ping_timeout: 2s}}
agents:
  a:
    backend: 'http://a:1'
    hosts: [a.example.com]
    websocket:
      allowed_origins: ["https://App.example.com:443", "https://*.example.org", "null"]
      max_connections: 10
      max_message_size: 1MiB
""")
        self.assertEqual(config.proxy.websocket, ProxyWebSocketConfig(5.0, 0.0, 2.0))
        self.assertEqual(config.agent("a").websocket, AgentWebSocketConfig(
            ("https://app.example.com", "https://*.example.org", "null"), 10, 1024 * 1024))

    def test_every_mistake_is_reported_with_its_key(self):
        error = self.assertRaises(ConfigError, self.parse, """
proxy: {websocket: {handshake_timeout: 0, ping_intervall: 1s}}
agents:
  a:
    backend: 'http://a:1'
    hosts: [a.example.com]
    websocket:
      allowed_origins: ["https://app.example.com/path", "https://*.com"]
      max_connections: 0
      max_message_size: lots
""")
        self.assertEqual(error.problems, [
            "orchestrator.yaml: proxy.websocket.handshake_timeout: expected a duration greater"
            ' than 0, got 0',
            'orchestrator.yaml: proxy.websocket.ping_intervall: unknown key, did you mean '
            '"ping_interval"?',
            'orchestrator.yaml: agents.a.websocket.allowed_origins[0]: expected an origin like'
            ' "https://app.example.com", got "https://app.example.com/path"',
            'orchestrator.yaml: agents.a.websocket.allowed_origins[1]: expected an origin like'
            ' "https://app.example.com", got "https://*.com"',
            "orchestrator.yaml: agents.a.websocket.max_connections: expected a positive "
            "integer, got 0",
            'orchestrator.yaml: agents.a.websocket.max_message_size: expected a size in bytes '
            'like 16384 or "16KiB", got "lots"',
        ])


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

    def test_agent_header_that_is_not_ascii_is_left_out(self):
        head = (b"HTTP/1.1 101 Switching Protocols\r\nX-Name: caf\xc3\xa9\r\n"
                b"X-Plain: yes\r\nbroken line\r\n")
        self.assertEqual(handshake_answer_headers(head), {"X-Plain": ["yes"]})

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
        handler = relay.relay(request, harness.agent, b"alpha.example.com", b"/ws",
                              ignored=False, client=("203.0.113.9", False))
        self.assertTrue(verifyObject(IRequestHandler, handler))

    def test_taken_over_socket_leaves_the_site_for_the_agents_registry(self):
        harness = RelayHarness()
        client, _ = harness.open()
        self.assertEqual(len(harness.site.channels), 0)
        self.assertEqual(len(harness.agent.connections), 1)
        self.assertNotIsInstance(client.transport.producer, FrontDoorChannel)


# Frames. ------------------------------------------------------------------------------


class FrameRelayTests(SynchronousTestCase):
    def setUp(self):
        self.harness = RelayHarness()
        self.client, self.backend = self.harness.open()

    def test_text_reaches_the_agent_masked_and_unchanged(self):
        self.client.send(frame(TEXT, "grüß dich".encode()))
        (relayed,) = self.backend.frames()
        self.assertEqual(relayed, Frame(True, TEXT, "grüß dich".encode(), masked=True))

    def test_binary_reaches_the_client_unmasked_and_unchanged(self):
        self.backend.send(frame(BINARY, bytes(range(256)), mask=None))
        self.assertEqual(self.client.frames(), [Frame(True, BINARY, bytes(range(256)), False)])

    def test_fragmented_message_keeps_its_frames(self):
        self.client.send(frame(TEXT, b"one ", fin=False) + frame(CONTINUATION, b"", fin=False)
                         + frame(PING, b"p") + frame(CONTINUATION, b"three", fin=True))
        frames = self.backend.frames()
        self.assertEqual([(f.fin, f.opcode, f.payload) for f in frames], [
            (False, TEXT, b"one "), (False, CONTINUATION, b""), (True, PING, b"p"),
            (True, CONTINUATION, b"three")])

    def test_frame_arriving_in_pieces_is_written_as_it_arrives(self):
        whole = frame(BINARY, b"x" * 70000, mask=None)
        self.backend.send(whole[:30000])
        self.assertGreater(len(self.client.received()), 29000)
        self.backend.send(whole[30000:])
        self.assertEqual(len(self.client.received()), len(whole) - 30000)

    def test_client_ping_is_answered_by_the_agent(self):
        self.client.send(frame(PING, b"are you there"))
        self.assertEqual(self.backend.frames(), [Frame(True, PING, b"are you there", True)])
        self.assertEqual(self.client.frames(), [])
        self.backend.send(frame(PONG, b"are you there", mask=None))
        self.assertEqual(self.client.frames(), [Frame(True, PONG, b"are you there", False)])

    def test_client_close_code_and_reason_reach_the_agent(self):
        self.client.send(close_frame(4001, b"bye now"))
        (close,) = self.backend.frames()
        self.assertEqual(close.close, (4001, b"bye now"))
        (echo,) = self.client.frames()
        self.assertEqual(echo.close, (4001, b"bye now"))

    def test_agent_close_codes_are_not_rewritten(self):
        for code in (1001, 1011, 1012, 1013, 1014, 3000, 4999):
            harness = RelayHarness()
            client, backend = harness.open()
            backend.send(close_frame(code, b"reason", mask=None))
            (close,) = client.frames()
            self.assertEqual(close.close, (code, b"reason"))

    def test_close_without_a_code_passes_as_such(self):
        self.backend.send(frame(CLOSE, mask=None))
        self.assertEqual(self.client.frames(), [Frame(True, CLOSE, b"", False)])

    def test_message_over_the_limit_closes_1009(self):
        harness = RelayHarness(**agent_with(max_message_size=1000))
        client, backend = harness.open()
        client.send(frame(TEXT, b"a" * 600, fin=False))
        client.send(frame(CONTINUATION, b"a" * 600))
        (close,) = client.frames()
        self.assertEqual(close.close[0], 1009)
        self.assertEqual([(f.opcode, f.close[0] if f.opcode == CLOSE else None)
                          for f in backend.frames()], [(TEXT, None), (CLOSE, 1001)])

    def test_invalid_utf8_closes_1007(self):
        self.client.send(frame(TEXT, b"caf\xe9!"))
        self.assertEqual(self.client.frames()[0].close[0], 1007)
        self.assertEqual(self.backend.frames()[0].close[0], 1001)

    def test_unmasked_client_frame_closes_1002(self):
        self.client.send(frame(TEXT, b"hi", mask=None))
        self.assertEqual(self.client.frames()[0].close[0], 1002)

    def test_agent_sending_invalid_utf8_is_a_bad_gateway_for_the_client(self):
        self.backend.send(frame(TEXT, b"\xff", mask=None))
        self.assertEqual(self.backend.frames()[0].close[0], 1007)
        self.assertEqual(self.client.frames()[0].close[0], 1014)

    def test_agent_vanishing_closes_the_client_with_1011(self):
        self.backend.vanish()
        self.assertEqual(self.client.frames()[0].close, (1011, b"agent connection lost"))

    def test_client_vanishing_closes_the_agent_with_1001(self):
        self.client.vanish()
        self.assertEqual(self.backend.frames()[0].close, (1001, b"client went away"))

    def test_half_written_frame_from_a_vanished_peer_cuts_the_other(self):
        whole = frame(BINARY, b"x" * 1000, mask=None)
        self.backend.send(whole[:500])
        self.backend.vanish()
        self.assertTrue(self.client.transport.disconnecting)

    def test_socket_leaves_the_registry_when_both_connections_are_closed(self):
        self.client.send(close_frame(1000))
        self.client.vanish()
        self.assertEqual(len(self.harness.agent.connections), 1)
        self.backend.vanish()
        self.assertEqual(len(self.harness.agent.connections), 0)

    def test_peer_that_never_closes_is_cut_after_the_ping_timeout(self):
        self.client.vanish()
        self.harness.clock.advance(5)
        self.assertTrue(self.backend.transport.disconnecting)


class KeepaliveTests(SynchronousTestCase):
    def setUp(self):
        self.harness = RelayHarness(config=ProxyConfig(websocket=ProxyWebSocketConfig(
            handshake_timeout=10, ping_interval=30, ping_timeout=5)))
        self.client, self.backend = self.harness.open()

    def test_both_peers_are_pinged_and_their_pongs_stay_with_the_relay(self):
        self.harness.clock.advance(31)
        (ping,) = self.client.frames()
        (backend_ping,) = self.backend.frames()
        self.assertEqual((ping.opcode, backend_ping.opcode), (PING, PING))
        self.client.send(frame(PONG, ping.payload))
        self.assertEqual(self.backend.frames(), [])

    def test_peer_not_answering_a_ping_is_dropped_and_the_other_told(self):
        self.harness.clock.advance(31)
        self.client.frames()
        self.backend.frames()
        self.backend.send(frame(PONG, b"", mask=None))  # not the answer
        self.harness.clock.advance(6)
        self.assertTrue(self.client.transport.disconnecting)

    def test_keepalive_ping_waits_for_a_half_written_frame(self):
        whole = frame(BINARY, b"y" * 1000)
        self.client.send(whole[:600])
        self.harness.clock.advance(31)
        self.assertEqual([f.opcode for f in self.backend.frames()], [])
        self.client.send(whole[600:])
        self.assertEqual([f.opcode for f in self.backend.frames()], [BINARY, PING])


# Activity and drain. ------------------------------------------------------------------


class ActivityTests(SynchronousTestCase):
    def setUp(self):
        self.harness = RelayHarness(idle=IdleConfig(timeout=60, drain_timeout=10))
        self.agent, self.clock = self.harness.agent, self.harness.clock
        self.client, self.backend = self.harness.open()

    def test_every_data_frame_either_way_is_activity(self):
        self.clock.advance(40)
        self.client.send(frame(TEXT, b"typing"))
        self.assertEqual(self.agent.last_activity, self.clock.seconds())
        self.clock.advance(40)
        self.backend.send(frame(BINARY, b"thinking", fin=False, mask=None))
        self.assertEqual(self.agent.last_activity, self.clock.seconds())

    def test_pings_and_pongs_are_not_activity(self):
        before = self.agent.last_activity
        self.clock.advance(30)
        self.client.send(frame(PING, b"?"))
        self.backend.send(frame(PONG, b"?", mask=None))
        self.assertEqual(self.agent.last_activity, before)

    def test_socket_with_traffic_keeps_the_agent_awake(self):
        for _ in range(5):
            self.clock.advance(30)
            self.client.send(frame(TEXT, b"still here"))
        self.assertEqual(self.agent.state, AgentState.READY)

    def test_silent_socket_lets_the_agent_sleep_and_is_closed_1001(self):
        self.clock.advance(61)
        self.assertEqual(self.client.frames()[0].close, (1001, b"going away"))
        self.assertEqual(self.backend.frames()[0].close, (1001, b"going away"))
        self.client.send(close_frame(1001))
        self.client.vanish()
        self.backend.send(close_frame(1001, mask=None))
        self.backend.vanish()
        self.assertEqual(self.agent.state, AgentState.SLEEPING)

    def test_socket_from_an_ignored_path_is_not_activity(self):
        harness = RelayHarness(idle=IdleConfig(timeout=60, drain_timeout=10,
                                               ignore_paths=("/monitor",)))
        before = harness.agent.last_activity
        client, _ = harness.open(upgrade_request(path=b"/monitor"))
        harness.clock.advance(5)
        client.send(frame(TEXT, b"status?"))
        self.assertEqual(harness.agent.last_activity, before)


class DrainTests(SynchronousTestCase):
    def test_go_away_closes_both_peers_with_1001(self):
        harness = RelayHarness()
        client, backend = harness.open()
        harness.relayed.go_away()
        self.assertEqual(client.frames()[0].close[0], 1001)
        self.assertEqual(backend.frames()[0].close[0], 1001)

    def test_frames_after_the_close_are_not_activity(self):
        harness = RelayHarness()
        client, backend = harness.open()
        harness.relayed.go_away()
        before = harness.agent.last_activity
        harness.clock.advance(1)
        client.send(frame(TEXT, b"late"))
        self.assertEqual(harness.agent.last_activity, before)
        self.assertEqual(backend.frames()[1:], [])

    def test_drain_aborts_sockets_still_open_after_its_timeout(self):
        harness = RelayHarness(config=ProxyConfig(websocket=ProxyWebSocketConfig(
            ping_interval=0, ping_timeout=60)))
        client, backend = harness.open()
        drained = harness.agent.connections.drain(30, harness.clock)
        harness.clock.advance(29)
        self.assertNoResult(drained)
        self.assertFalse(client.transport.disconnecting)
        harness.clock.advance(1)
        self.assertEqual(self.successResultOf(drained), 1)
        self.assertTrue(client.transport.disconnecting)
        self.assertTrue(backend.transport.disconnecting)

    def test_drain_ends_as_soon_as_the_peers_have_closed(self):
        harness = RelayHarness()
        client, backend = harness.open()
        drained = harness.agent.connections.drain(30, harness.clock)
        client.send(close_frame(1001))
        client.vanish()
        backend.vanish()
        self.assertEqual(self.successResultOf(drained), 0)

    def test_go_away_during_the_handshake_is_503(self):
        harness = RelayHarness()
        client = harness.upgrade()
        backend = harness.accept_backend()
        harness.relayed.go_away()
        status, headers, _ = http_head(client.received())
        self.assertEqual((status, headers[b"retry-after"]), (503, b"3"))
        self.assertTrue(backend.closed)


class LogTests(SynchronousTestCase):
    """
    What one client can repeat at will (through Autobahn or the relay) is logged at
    most once a minute per kind.
    """

    def setUp(self):
        self.logged = HttpPathLog(self)

    def assertEachKindOnce(self):
        kinds = [event.get("log_format") for event in self.logged]
        self.assertEqual(len(kinds), len(set(kinds)), kinds)

    def test_malformed_handshakes(self):
        harness = RelayHarness()
        for _ in range(50):
            harness.upgrade(upgrade_request(extra=b"Sec-WebSocket-Version: 7\r\n"))
        self.assertEachKindOnce()

    def test_handshakes_the_agent_refuses(self):
        harness = RelayHarness()
        for _ in range(50):
            harness.upgrade()
            backend = harness.accept_backend()
            backend.received()
            backend.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            backend.vanish()
        self.assertEachKindOnce()

    def test_invalid_frames(self):
        harness = RelayHarness()
        for _ in range(50):
            client, backend = harness.open()
            client.send(frame(TEXT, b"caf\xe9!"))
            client.vanish()
            backend.vanish()
        self.assertEachKindOnce()


class FlowControlTests(SynchronousTestCase):
    def test_agent_slow_to_read_pauses_reading_from_the_client(self):
        harness = RelayHarness()
        client, backend = harness.open()
        backend.transport.producer.pauseProducing()
        self.assertEqual(client.transport.producerState, "paused")
        backend.transport.producer.resumeProducing()
        self.assertEqual(client.transport.producerState, "producing")

    def test_client_slow_to_read_pauses_reading_from_the_agent(self):
        harness = RelayHarness()
        client, backend = harness.open()
        client.transport.producer.pauseProducing()
        self.assertEqual(backend.transport.producerState, "paused")

    def test_a_lost_peer_unpauses_the_other(self):
        harness = RelayHarness()
        client, backend = harness.open()
        backend.transport.producer.pauseProducing()
        backend.vanish()
        self.assertEqual(client.transport.producerState, "producing")


# Over loopback, with the real reactor. ------------------------------------------------


class EchoServer(WebSocketServerProtocol):
    """
    The agent: echoes every message with the frames it came in, and records what it saw.
    A text message C{close <code> <reason>} makes it close with that code instead.
    """

    def onConnect(self, request):
        self.factory.handshakes.append(request)
        return request.protocols[0] if request.protocols else None

    def onOpen(self):
        self.factory.opened.append(self)
        if self.factory.read_nothing:
            self.transport.pauseProducing()

    def onMessageBegin(self, isBinary):
        super().onMessageBegin(isBinary)
        self.frames = 0

    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)
        self.frames += 1

    def onMessage(self, payload, isBinary):
        self.factory.messages.append((payload, isBinary, self.frames))
        if not isBinary and payload.startswith(b"close "):
            _, code, reason = payload.split(b" ", 2)
            self.sendCloseFrame(int(code), reason)
            return
        self.sendMessage(payload, isBinary, fragmentSize=max(1, len(payload) // self.frames))

    def onClose(self, wasClean, code, reason):
        self.factory.closes.append((code, reason))


class LoopbackTests(TestCase):
    """
    Autobahn and websockets clients through the proxy's relay to an Autobahn echo server,
    everything on 127.0.0.1 with the real reactor.
    """

    timeout = 60

    async def start(self, **websocket) -> None:
        echo = self.echo = WebSocketServerFactory()
        echo.protocol = EchoServer
        echo.setProtocolOptions(maxMessagePayloadSize=0)
        echo.handshakes, echo.opened, echo.messages, echo.closes = [], [], [], []
        echo.read_nothing = False
        root = Resource()
        root.putChild(b"ws", WebSocketResource(echo))
        backend = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
        self.addCleanup(backend.stopListening)
        config = agent_config(backend=Backend("http", "127.0.0.1", backend.getHost().port),
                              websocket=AgentWebSocketConfig(**websocket))
        swarm = FakeSwarm()
        swarm.add_service(config.service, replicas=1)
        agent = self.agent = Agent(config, swarm=swarm, prober=ScriptedProber(),
                                   bus=EventBus(reactor), reactor=reactor)
        self.addCleanup(agent.stop)
        await agent.start()
        routes = RouteTable()
        routes.add("alpha.example.com", agent, owner="alpha")
        proxy = ProxyConfig()
        site = self.site = FrontDoorSite(
            ProxyResource(routes, proxy, clock=reactor), header_timeout=proxy.header_timeout,
            max_header_bytes=proxy.max_header_bytes,
            idle_timeout=proxy.idle_connection_timeout, reactor=reactor)
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    async def connect(self, path="/ws", protocols=None) -> RecordingClient:
        factory = WebSocketClientFactory(f"ws://alpha.example.com{path}", protocols=protocols)
        factory.protocol = RecordingClient
        factory.setProtocolOptions(maxMessagePayloadSize=0)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        client = await endpoint.connect(factory)
        await client.is_open
        self.addCleanup(lambda: Deferred.fromCoroutine(self.closed(client)))
        return client

    async def closed(self, client):
        """
        Drop C{client} and wait until the relay and the agent have closed its socket.
        """
        if client.transport is not None:
            client.transport.abortConnection()
        await self.until_closed()

    async def until_closed(self):
        """
        Wait until every relayed socket and every agent-side connection is closed.
        """
        async def all_closed():
            assert len(self.agent.connections) == 0
            assert len(self.echo.closes) == len(self.echo.opened)

        await poll_until(all_closed, reactor, timeout=10, interval=0.01)

    @inline
    async def test_text_binary_fragmented_and_large_messages_come_back_unchanged(self):
        await self.start()
        client = await self.connect()
        client.sendMessage("grüß dich".encode(), isBinary=False)
        self.assertEqual(await client.received.get(), ("grüß dich".encode(), False))
        client.sendMessage(bytes(range(256)), isBinary=True)
        self.assertEqual(await client.received.get(), (bytes(range(256)), True))
        fragmented = b"0123456789" * 9 + b"01234"
        client.sendMessage(fragmented, isBinary=False, fragmentSize=10)
        self.assertEqual(await client.received.get(), (fragmented, False))
        self.assertEqual(self.echo.messages[-1][2], 10)  # the agent got the 10 frames
        large = os.urandom(10 * 1024 * 1024)
        client.sendMessage(large, isBinary=True)
        self.assertEqual(await client.received.get(), (large, True))

    @inline
    async def test_close_codes_and_reasons_pass_both_ways(self):
        await self.start()
        client = await self.connect()
        client.sendClose(4001, "bye now")
        self.assertEqual(await client.closed, (4001, "bye now"))
        await self.until_closed()
        self.assertEqual(self.echo.closes, [(4001, "bye now")])
        client = await self.connect()
        client.sendMessage(b"close 1011 out of memory")
        self.assertEqual(await client.closed, (1011, "out of memory"))

    @inline
    async def test_message_over_the_agents_limit_closes_1009(self):
        await self.start(max_message_size=1024 * 1024)
        client = await self.connect()
        client.sendMessage(b"x" * (1024 * 1024 + 1), isBinary=True)
        code, _ = await client.closed
        self.assertEqual(code, 1009)
        await self.until_closed()
        self.assertEqual(self.echo.messages, [])
        self.assertEqual([code for code, _ in self.echo.closes], [1001])

    @inline
    async def test_agent_going_to_sleep_closes_the_socket_with_1001(self):
        await self.start()
        client = await self.connect()
        drained = self.agent.connections.drain(5, reactor)
        self.assertEqual(await client.closed, (1001, "going away"))
        self.assertEqual(await drained, 0)
        self.assertEqual(self.echo.closes, [(1001, "going away")])

    @inline
    async def test_independent_client_through_the_relay(self):
        await self.start()

        def talk():
            sock = socket.create_connection(("127.0.0.1", self.port))
            with websockets.sync.client.connect(
                    "ws://alpha.example.com/ws?room=1", sock=sock, subprotocols=["v2", "v1"],
                    origin="https://alpha.example.com", max_size=None) as websocket:
                websocket.send("hello")
                text = websocket.recv()
                websocket.send([b"frag", b"mented"])
                fragmented = websocket.recv()
                subprotocol = websocket.subprotocol
                websocket.close(4321, "done")
                return text, fragmented, subprotocol, websocket.close_code

        result = await deferToThread(talk)
        self.assertEqual(result, ("hello", b"fragmented", "v2", 4321))
        (handshake,) = self.echo.handshakes
        self.assertEqual((handshake.path, handshake.params), ("/ws", {"room": ["1"]}))
        self.assertEqual(handshake.headers["origin"], "https://alpha.example.com")

    @inline
    async def test_slow_reader_pauses_the_writer_and_the_relay_buffers_little(self):
        await self.start()
        self.echo.read_nothing = True
        client = await self.connect()
        (relayed,) = list(self.agent.connections)
        chunk = os.urandom(256 * 1024)
        for _ in range(80):  # 20 MiB the agent does not read
            client.sendMessage(chunk, isBinary=True)
        buffered = []
        for _ in range(20):
            await deferLater(reactor, 0.05, lambda: None)
            buffered.append(_write_buffer(relayed.backend.transport)
                            + _write_buffer(relayed.frontend.transport))
        self.assertTrue(relayed.backend.transport.producerPaused)
        self.assertLess(max(buffered), 1024 * 1024)
        self.assertGreater(_write_buffer(client.transport), 10 * 1024 * 1024)
        (agent_side,) = self.echo.opened
        agent_side.transport.resumeProducing()
        for _ in range(80):
            self.assertEqual(await client.received.get(), (chunk, True))


def _write_buffer(transport) -> int:
    """
    Bytes a TCP transport holds, not yet written to its socket.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


