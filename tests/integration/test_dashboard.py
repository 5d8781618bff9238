"""
The dashboard in a real browser (headless Chromium through Selenium), in front of a
real Swarm service: a wrong token is refused, an agent woken through the proxy shows
starting then ready within a second of each change without a reload, and the sleep
button puts it to sleep. (The README's screenshot, with more agents on the in-memory
Swarm, is dev/dashboard-screenshot's.)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from orchestrator.config.model import AdminConfig
from orchestrator.events.bus import IEventConsumer
from tests.helpers import inline

from . import engine
from .running import agent_config, start_orchestrator
from .test_coldstart_swarm import chromium_or_skip
from .test_wake import client_pool

TOKEN = "dashboard-test-token-0123456789"


@implementer(IEventConsumer)
class StateChanges:
    """
    When each agent state change happened (the wall clock, as the browser is measured).
    """

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def consume(self, event) -> None:
        state = event.fields.get("state")
        if state and "previous" in event.fields:
            self.at.setdefault(state, time.time())


class DashboardTests(TestCase):
    timeout = 240

    def setUp(self):
        self.driver = chromium_or_skip()
        self.addCleanup(self.driver.quit)
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)
        self.service_name = engine.unique_name("dash")
        self.port = engine.free_port()
        engine.create_service(self.client, self.service_name, replicas=0, port=self.port)
        self.addCleanup(engine.remove_service, self.client, self.service_name)
        self.orchestrator = start_orchestrator(
            self, agent_config("dash", self.service_name, self.port, idle=_long_idle()),
            admin=AdminConfig(token=TOKEN))
        self.changes = StateChanges()
        self.orchestrator.service.bus.subscribe(self.changes)

    def run_js(self, script, *args):
        return deferToThread(self.driver.execute_script, script, *args)

    async def badge(self) -> str:
        return await self.run_js(
            "const b = document.querySelector('tr[data-agent=\"dash\"] .badge');"
            "return b ? b.textContent : null;")

    async def until_badge(self, wanted: str, timeout: float = 60.0) -> float:
        """
        Poll the page (never reloading it) until the row shows C{wanted}; when it did.
        """
        async def shows():
            assert await self.badge() == wanted
            return time.time()

        return await engine.poll_until(shows, reactor, timeout=timeout, interval=0.05)

    async def sign_in(self, token: str) -> None:
        await self.run_js(
            "document.getElementById('token').value = arguments[0];"
            "document.getElementById('login-form').requestSubmit();", token)

    @inline
    async def test_wake_through_the_proxy_shows_live_and_the_sleep_button_sleeps(self):
        driver = self.driver
        await deferToThread(driver.get, self.orchestrator.admin_url + "/")
        self.assertEqual(driver.title, "orchestrator")

        # A wrong token is refused, and nothing is shown.
        await self.sign_in("not-the-token")

        async def refused():
            text = await self.run_js("return document.getElementById('login-error').textContent")
            assert text == "The token was refused.", text

        await engine.poll_until(refused, reactor, timeout=10, interval=0.05)
        self.assertTrue(await self.run_js("return document.getElementById('board').hidden"))
        stored = await self.run_js("return sessionStorage.getItem('orchestrator.admin-token')")
        self.assertIsNone(stored)

        # The right one: the board, the agent asleep, the stream live.
        await self.sign_in(TOKEN)
        await self.until_badge("sleeping", timeout=20)
        self.assertNotIn(TOKEN, driver.current_url)
        self.assertEqual(await self.run_js(
            "return getComputedStyle(document.getElementById('login')).display"), "none")

        async def live():
            state = await self.run_js(
                "return document.getElementById('connection').dataset.state")
            assert state == "live", state

        await engine.poll_until(live, reactor, timeout=10, interval=0.05)
        page_id = await self.run_js("return window.performance.timeOrigin")

        # A request through the proxy wakes it; the page follows without a reload.
        response = await treq.get(self.orchestrator.proxy_url + "/",
                                  headers={"Host": "dash.localhost"}, pool=client_pool(self))
        await response.content()
        self.assertEqual(response.code, 503)
        seen_starting = await self.until_badge("starting", timeout=10)
        self.assertLess(seen_starting - self.changes.at["starting"], 1.0)
        seen_ready = await self.until_badge("ready", timeout=90)
        self.assertLess(seen_ready - self.changes.at["ready"], 1.0)
        self.assertEqual(await self.run_js("return window.performance.timeOrigin"), page_id)

        async def row_filled():
            text = await self.run_js(
                "return document.querySelector('tr[data-agent=\"dash\"]').innerText")
            assert "last activity" in text and "scheduling" in text, text

        await engine.poll_until(row_filled, reactor, timeout=10, interval=0.1)
        await self.screenshot()

        # The sleep button.
        await self.run_js("document.querySelector('tr[data-agent=\"dash\"] .do-sleep').click()")
        await self.until_badge("sleeping", timeout=60)

        async def asleep():
            assert self.orchestrator.agent("dash").state.value == "sleeping"
            spec = self.client.api.inspect_service(self.service_name)["Spec"]
            assert spec["Mode"]["Replicated"]["Replicas"] == 0

        await engine.poll_until(asleep, reactor, timeout=30, interval=0.2)
        events = await self.run_js(
            "return [...document.querySelectorAll('#events li')].map(li => li.textContent)")
        self.assertTrue(any("agent.sleep" in line and "reason=admin" in line
                            for line in events), json.dumps(events))

    async def screenshot(self) -> None:
        """
        The page as it was, next to the test's files (for looking at a failure).
        """
        path = Path(os.path.abspath(self.mktemp() + "-dashboard.png"))
        await deferToThread(self.driver.save_screenshot, str(path))
        self.assertGreater(path.stat().st_size, 1000)


def _long_idle():
    from orchestrator.config.model import IdleConfig

    # Long enough that it does not fall asleep by itself during the test.
    return IdleConfig(timeout=600, drain_timeout=1)


class ManyAgentsTests(TestCase):
    """
    300 agents (on the in-memory Swarm: the browser is what is measured here): the page
    lists them all, filters them, and follows a change in one within a second.
    """

    timeout = 120

    @inline
    async def test_three_hundred_agents(self):
        from orchestrator.config.model import AgentConfig, Backend, Config, ListenConfig
        from orchestrator.service import OrchestratorService
        from orchestrator.swarm.memory import FakeSwarm
        from tests.helpers import ScriptedProber

        driver = chromium_or_skip()
        self.addCleanup(driver.quit)
        swarm = FakeSwarm()
        agents = []
        for index in range(300):
            name = f"agent-{index:03d}"
            swarm.add_service(name, replicas=0)
            agents.append(AgentConfig(name=name, service=name,
                                      backend=Backend("http", "127.0.0.1", 9),
                                      hosts=(f"{name}.localhost",)))
        admin_port = engine.free_port()
        config = Config(source="<300 agents>", agents=tuple(agents),
                        admin=AdminConfig(token=TOKEN),
                        listen=ListenConfig(proxy=f"tcp:{engine.free_port()}:interface=127.0.0.1",
                                            admin=f"tcp:{admin_port}:interface=127.0.0.1"))
        service = OrchestratorService(config, swarm=swarm, reactor=reactor,
                                      prober=ScriptedProber())
        service.startService()
        self.addCleanup(service.stopService)

        started = time.time()
        await deferToThread(driver.get, f"http://127.0.0.1:{admin_port}/")
        await deferToThread(driver.execute_script,
                            "document.getElementById('token').value = arguments[0];"
                            "document.getElementById('login-form').requestSubmit();", TOKEN)

        async def all_listed():
            count = await deferToThread(driver.execute_script,
                                        "return document.querySelectorAll('#rows tr').length")
            assert count == 300, count
            state = await deferToThread(driver.execute_script,
                                        "return document.getElementById('connection')"
                                        ".dataset.state")
            assert state == "live", state

        await engine.poll_until(all_listed, reactor, timeout=20, interval=0.1)
        self.assertLess(time.time() - started, 10.0)

        await deferToThread(driver.execute_script,
                            "const f = document.getElementById('filter');"
                            "f.value = 'agent-15'; f.dispatchEvent(new Event('input'));")
        shown = await deferToThread(driver.execute_script,
                                    "return [...document.querySelectorAll('#rows tr')]"
                                    ".filter(r => !r.hidden).length")
        self.assertEqual(shown, 10)  # agent-150 to agent-159

        service.agents["agent-150"].wake("test")
        changed = time.time()

        async def ready():
            text = await deferToThread(
                driver.execute_script,
                "return document.querySelector('tr[data-agent=\"agent-150\"] .badge')"
                ".textContent")
            assert text == "ready", text
            return time.time()

        seen = await engine.poll_until(ready, reactor, timeout=10, interval=0.05)
        self.assertLess(seen - changed, 1.0)
