"""
Cold starts for real: a headless Chromium meeting a sleeping agent, and hold mode, in
front of a real Swarm service.
"""

import os
import shutil

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from orchestrator.config.model import ColdStart, ColdStartConfig
from tests.helpers import inline

from . import engine
from .running import agent_config, start_orchestrator
from .test_wake import client_pool


def chromium_or_skip():
    """
    A headless Chromium driven through Debian's chromedriver; in CI its absence fails.
    """
    missing = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = f"no headless browser: missing {', '.join(missing)} (dev/prerequisites installs them)"
        if engine.in_ci():
            raise AssertionError(reason)
        raise SkipTest(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--no-proxy-server",
                 "--window-size=1000,700"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


class ServiceFixture:
    def __init__(self, test, prefix, **agent_changes):
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)
        self.name = engine.unique_name(prefix)
        self.port = engine.free_port()
        engine.create_service(self.client, self.name, replicas=0, port=self.port)
        test.addCleanup(engine.remove_service, self.client, self.name)
        self.orchestrator = start_orchestrator(
            test, agent_config(prefix, self.name, self.port, **agent_changes))

    async def until_sleeping(self, host):
        async def sleeping():
            agent = self.orchestrator.agent(host.split(".")[0])
            assert agent.state.value == "sleeping", agent.state

        await engine.poll_until(sleeping, reactor, timeout=10, interval=0.05)


class BrowserTests(TestCase):
    timeout = 180

    @inline
    async def test_browser_waits_on_the_waiting_page_and_lands_on_the_agents_page(self):
        driver = chromium_or_skip()
        self.addCleanup(driver.quit)
        fixture = ServiceFixture(self, "browser")
        await fixture.until_sleeping("browser.localhost")
        proxy_port = fixture.orchestrator.proxy_url.rsplit(":", 1)[1]
        url = f"http://browser.localhost:{proxy_port}/index.html"

        await deferToThread(driver.get, url)
        self.assertEqual(driver.title, "Starting browser")
        screenshot = os.path.abspath(self.mktemp() + "-waiting-page.png")
        await deferToThread(driver.save_screenshot, screenshot)
        self.assertGreater(os.path.getsize(screenshot), 1000)

        async def on_the_agents_page():
            source = await deferToThread(lambda: driver.page_source)
            assert "hello from httpd" in source, source[:200]

        await engine.poll_until(on_the_agents_page, reactor, timeout=60, interval=0.2)
        self.assertEqual(driver.current_url, url)


class HoldModeTests(TestCase):
    timeout = 120

    @inline
    async def test_post_to_a_sleeping_agent_gets_the_backends_answer_in_one_request(self):
        fixture = ServiceFixture(
            self, "hold", cold_start=attrs.evolve(ColdStartConfig(), mode=ColdStart.HOLD))
        await fixture.until_sleeping("hold.localhost")
        response = await treq.post(fixture.orchestrator.proxy_url + "/cgi-bin/echo",
                                   data=b"webhook payload", headers={"Host": "hold.localhost"},
                                   pool=client_pool(self))
        body = await response.content()
        self.assertEqual((response.code, body), (200, b"POST webhook payload"))
        self.assertGreater(int(response.headers.getRawHeaders("x-cold-start")[0]), 0)
        self.assertEqual(fixture.orchestrator.swarm.scale_calls, [(fixture.name, 1)])
