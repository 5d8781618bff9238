"""
WebSockets through the orchestrator to a real Swarm service: the demo agent
(C{orchestrator/demo-agent:dev}, a WebSocket echo at C{/ws}) published in host mode on a
loopback port, the orchestrator running in-process with short idle timeouts.
"""

from __future__ import annotations

import json
import socket

import websockets.exceptions
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from orchestrator.config.model import IdleConfig
from orchestrator.states import AgentState
from tests.helpers import RecordingClient, inline

from . import engine
from .running import agent_config, start_orchestrator

HOST = "ws.localhost"


class WebSocketSwarmTests(TestCase):
    timeout = 120

    def setUp(self):
        self.docker = engine.engine_or_skip()
        image = engine.ensure_demo_image(self.docker)
        self.service_name = engine.unique_name("ws")
        port = engine.free_port()
        engine.create_service(self.docker, self.service_name, replicas=0, image=image,
                              port=port, target_port=engine.DEMO_PORT, stop_grace=2)
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
            return engine.websocket_echo(sock, HOST, messages)
        except websockets.exceptions.InvalidStatus as refused:
            response = refused.response
            return response.status_code, dict(response.headers), json.loads(response.body)

    async def connect(self) -> RecordingClient:
        factory = WebSocketClientFactory(f"ws://{HOST}/ws")
        factory.protocol = RecordingClient
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
            self.assertEqual(await client.received.get(), (b"still here", False))
            await deferLater(reactor, 0.5, lambda: None)
        self.assertIs(self.agent.state, AgentState.READY)
        code, reason = await client.closed  # silent now: the agent goes to sleep
        self.assertEqual((code, reason), (1001, "going away"))
        await self.until_state(AgentState.SLEEPING, timeout=10)
        self.assertEqual(len(self.agent.connections), 0)

        async def scaled_down():
            # The agent is asleep first; the scale to 0 follows (a Docker call).
            assert self.replicas() == 0

        await engine.poll_until(scaled_down, reactor, timeout=10, interval=0.1)
