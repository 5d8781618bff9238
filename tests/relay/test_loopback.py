"""
The relay over loopback with the real reactor: Autobahn and websockets clients through
the proxy to an Autobahn echo server.
"""

from __future__ import annotations

import os
import socket

import websockets.sync.client
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from orchestrator.agents.runtime import Agent
from orchestrator.config.model import (
    AgentWebSocketConfig,
    Backend,
    ProxyConfig,
)
from orchestrator.events.bus import EventBus
from orchestrator.proxy.frontdoor import FrontDoorSite
from orchestrator.proxy.root import ProxyResource
from orchestrator.swarm.memory import FakeSwarm
from tests.helpers import (
    RecordingClient,
    ScriptedProber,
    agent_config,
    inline,
    routes_to,
)
from tests.integration.engine import poll_until

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
        proxy = ProxyConfig()
        site = self.site = FrontDoorSite(
            ProxyResource(routes_to(agent), proxy, clock=reactor), proxy, reactor=reactor)
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
