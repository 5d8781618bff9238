"""
WebSockets through the orchestrator to a real Swarm service: the demo agent
(C{orchestrator/demo-agent:dev}, a WebSocket echo at C{/ws}) published in host mode on a
loopback port, the orchestrator running in-process with short idle timeouts.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import docker.errors
import websockets.exceptions
import websockets.sync.client
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from docker.types import EndpointSpec, ServiceMode
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from orchestrator.config import IdleConfig
from orchestrator.states import AgentState

from . import engine
from .running import agent_config, start_orchestrator

DEMO_IMAGE = "orchestrator/demo-agent:dev"
DEMO_PORT = 8081
BUILD = Path(__file__).parents[2] / "deploy" / "images" / "build"
HOST = "ws.localhost"


def ensure_demo_image(client) -> None:
    """
    Build the demo agent's image with C{deploy/images/build} unless it is there.
    """
    try:
        client.images.get(DEMO_IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run([str(BUILD)], check=True, timeout=900)


def create_demo_service(client, name: str, port: int) -> None:
    """
    The demo agent as a test service at 0 replicas, its port published on the host.
    """
    client.services.create(
        DEMO_IMAGE,
        name=name,
        mode=ServiceMode("replicated", 0),
        labels={engine.TEST_LABEL: "1"},
        endpoint_spec=EndpointSpec(mode="dnsrr", ports={port: (DEMO_PORT, "tcp", "host")}),
        stop_grace_period=2 * 1_000_000_000,
    )


class Client(WebSocketClientProtocol):
    """
    An Autobahn client that queues what it receives.
    """

    def onOpen(self):
        self.received = DeferredQueue()
        self.closed = Deferred()

    def onMessage(self, payload, isBinary):
        self.received.put(payload)

    def onClose(self, wasClean, code, reason):
        if hasattr(self, "closed"):
            self.closed.callback((code, reason))


def inline(coroutine_function):
    def run(self):
        return Deferred.fromCoroutine(coroutine_function(self))

    run.__name__ = coroutine_function.__name__
    return run


class WebSocketSwarmTests(TestCase):
    timeout = 120

    def setUp(self):
        self.docker = engine.engine_or_skip()
        ensure_demo_image(self.docker)
        self.service_name = engine.unique_name("ws")
        port = engine.free_port()
        create_demo_service(self.docker, self.service_name, port)
        self.addCleanup(engine.remove_service, self.docker, self.service_name)
        self.orchestrator = start_orchestrator(self, agent_config(
            "ws", self.service_name, port, idle=IdleConfig(timeout=3, drain_timeout=1)))
        self.agent = self.orchestrator.agent("ws")
        self.proxy_port = int(self.orchestrator.proxy_url.rsplit(":", 1)[1])

    async def until_state(self, state: AgentState, timeout: float = 60) -> None:
        async def reached():
            assert self.agent.state is state, self.agent.state

        await engine.poll_until(reached, reactor, timeout=timeout, interval=0.05)

    def replicas(self) -> int:
        spec = self.docker.api.inspect_service(self.service_name)["Spec"]
        return spec["Mode"]["Replicated"]["Replicas"]

    def talk(self, *messages):
        """
        In a thread, with the websockets package: open a socket, send C{messages}, return
        the answers; or the refusal (status, headers, JSON body) if there is one.
        """
        sock = socket.create_connection(("127.0.0.1", self.proxy_port))
        try:
            with websockets.sync.client.connect(f"ws://{HOST}/ws", sock=sock,
                                                open_timeout=10) as websocket:
                answers = []
                for message in messages:
                    websocket.send(message)
                    answers.append(websocket.recv(timeout=10))
                return answers
        except websockets.exceptions.InvalidStatus as refused:
            response = refused.response
            return response.status_code, dict(response.headers), json.loads(response.body)

    async def connect(self) -> Client:
        factory = WebSocketClientFactory(f"ws://{HOST}/ws")
        factory.protocol = Client
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port).connect(factory)
        await client.is_open
        self.addCleanup(lambda: client.transport and client.transport.abortConnection())
        return client

    @inline
    async def test_websocket_to_a_sleeping_agent_wakes_it_then_echoes(self):
        await self.until_state(AgentState.SLEEPING, timeout=15)
        status, headers, body = await deferToThread(self.talk, "hello")
        self.assertEqual(status, 503)
        self.assertEqual(headers["retry-after"], "3")
        self.assertEqual((body["status"], body["agent"]), ("starting", "ws"))
        await self.until_state(AgentState.READY)
        answers = await deferToThread(self.talk, "hello", b"\x00\x01binary")
        self.assertEqual(answers, ["hello", b"\x00\x01binary"])

    @inline
    async def test_traffic_keeps_the_agent_awake_and_silence_lets_it_sleep_closing_1001(self):
        await self.until_state(AgentState.SLEEPING, timeout=15)
        self.agent.wake(reason="test")
        await self.until_state(AgentState.READY)
        client = await self.connect()
        for _ in range(10):  # 5 s of traffic, longer than idle.timeout (3 s)
            client.sendMessage(b"still here")
            self.assertEqual(await client.received.get(), b"still here")
            await deferLater(reactor, 0.5, lambda: None)
        self.assertIs(self.agent.state, AgentState.READY)
        code, reason = await client.closed  # silent now: the agent goes to sleep
        self.assertEqual((code, reason), (1001, "going away"))
        await self.until_state(AgentState.SLEEPING, timeout=10)
        self.assertEqual(len(self.agent.connections), 0)
        self.assertEqual(self.replicas(), 0)
