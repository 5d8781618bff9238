"""
The relay in memory, for tests: RFC 6455 frames built and read by hand (the test is the
peer, independent of Autobahn), and the proxy listener with one agent whose backend the
test plays, through the relay's real endpoints over a MemoryReactor.
"""

from __future__ import annotations

import base64
import hashlib
import struct

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from orchestrator.config.model import (
    AgentWebSocketConfig,
    ProxyConfig,
    ProxyWebSocketConfig,
)
from orchestrator.meters import NO_METER
from orchestrator.proxy.frontdoor import FrontDoorSite
from orchestrator.proxy.root import ProxyResource
from tests.helpers import (
    MemoryNetwork,
    TCPLikeTransport,
    make_agent,
    routes_to,
)

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
    line, headers, body = http_request_head(raw)
    status = line.split(b" ")[1]
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
                 swarm=None, meter=NO_METER, **agent_config) -> None:
        config = config or ProxyConfig(
            websocket=ProxyWebSocketConfig(handshake_timeout=10, ping_interval=0,
                                           ping_timeout=5))
        self.fixture = make_agent(replicas=replicas, swarm=swarm, **agent_config)
        self.agent = self.fixture.agent
        self.clock = self.fixture.clock
        self.clock.advance(0.1)
        self.network = MemoryNetwork(self.clock)
        self.routes = routes_to(self.agent)
        self.resource = ProxyResource(self.routes, config, clock=self.clock, meter=meter)
        self.site = FrontDoorSite(self.resource, config, reactor=self.clock)

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
