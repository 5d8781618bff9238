"""
The waiting page a browser gets for an agent that is not ready, and /api/client.js
(orchestrator.proxy.waiting).
"""

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import ColdStartConfig
from orchestrator.proxy.waiting import CLIENT_JS, WaitingPage, WaitingPages
from tests.http.test_negotiation import CHROME_ACCEPT
from tests.proxy.harness import cold_harness


class WaitingPageTests(SynchronousTestCase):
    def test_browser_gets_the_waiting_page_with_503_and_retry_after(self):
        harness = cold_harness()
        response = harness.get(extra=b"Accept: " + CHROME_ACCEPT + b"\r\n")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header(b"retry-after"), b"3")
        self.assertTrue(response.header(b"content-type").startswith(b"text/html"))
        self.assertIn(b"Starting <strong>alpha</strong>", response.body)
        self.assertIn(b'/api/health?wait=30', response.body)
        self.assertIn(b'<noscript><meta http-equiv="refresh" content="3"></noscript>', response.body)

    def test_other_clients_keep_the_json_body(self):
        response = cold_harness().get(extra=b"Accept: */*\r\n")
        self.assertEqual(response.json()["status"], "starting")

    def test_page_escapes_what_it_shows(self):
        page = WaitingPage().render({"status": "degraded", "agent": "a",
                                     "reason": "<script>alert(1)</script>"}, 3)
        self.assertNotIn(b"<script>alert(1)", page)
        self.assertIn(b"&lt;script&gt;", page)

    def test_agent_can_bring_its_own_template(self):
        path = self.mktemp()
        with open(path, "w") as template:
            template.write("<p>$agent is $status, about ${estimated_wait}s</p>")
        harness = cold_harness(cold_start=ColdStartConfig(page=path))
        response = harness.get(extra=b"Accept: text/html\r\n")
        self.assertEqual(response.body, b"<p>alpha is starting, about nulls</p>")

    def test_client_helper_is_served_on_every_agent_host(self):
        response = cold_harness().get(b"/api/client.js")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.header(b"content-type").startswith(b"text/javascript"))
        self.assertEqual(response.body, CLIENT_JS)


class WaitingPagesTests(SynchronousTestCase):
    STATE = {"status": "starting", "agent": "alpha"}

    def test_a_template_is_read_once_until_forgotten(self):
        path = self.mktemp()
        with open(path, "w") as template:
            template.write("one $agent")
        pages = WaitingPages()
        self.assertEqual(pages.page(path).render(self.STATE, 3), b"one alpha")
        with open(path, "w") as template:
            template.write("two $agent")
        self.assertEqual(pages.page(path).render(self.STATE, 3), b"one alpha")
        pages.forget()
        self.assertEqual(pages.page(path).render(self.STATE, 3), b"two alpha")

    def test_a_template_gone_since_the_config_was_read_falls_back_logged_once(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pages, missing = WaitingPages(), self.mktemp()
        for _ in range(3):
            page = pages.page(missing)
        self.assertEqual(page.render(self.STATE, 3), WaitingPage().render(self.STATE, 3))
        self.assertEqual([event["event"] for event in logged], ["proxy.page_unreadable"])
