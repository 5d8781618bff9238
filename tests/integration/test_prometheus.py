"""
Metrics for real: Debian's Prometheus scrapes an orchestrator in front of a real Swarm
service (on the metrics listener, and on the admin listener with the bearer token);
after a real wake, a query through Prometheus's HTTP API sees the wake's phase
histogram. promtool checks the exposition and the alert rules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from orchestrator.config.model import AdminConfig
from tests.helpers import inline

from . import engine
from .running import agent_config, start_orchestrator
from .test_wake import client_pool

TOKEN = "prometheus-test-token-0123456789"
RULES = Path(__file__).parents[2] / "deploy" / "prometheus"


def tool_or_skip(name: str) -> str:
    """
    A Prometheus tool's path; missing, the test skips (saying how to get it), or fails
    in CI.
    """
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is missing: apt-get install prometheus (dev/prerequisites does)"
        if engine.in_ci():
            raise AssertionError(reason)
        raise SkipTest(reason)
    return path


class AlertRulesTests(TestCase):
    def test_the_alert_rules_are_valid(self):
        done = subprocess.run([tool_or_skip("promtool"), "check", "rules",
                               str(RULES / "alerts.yml")], capture_output=True, text=True,
                              timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_each_alert_fires_on_its_series(self):
        done = subprocess.run([tool_or_skip("promtool"), "test", "rules", "alerts.test.yml"],
                              capture_output=True, text=True, timeout=60, cwd=RULES)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


class PrometheusScrapeTests(TestCase):
    timeout = 240

    def setUp(self):
        self.prometheus = tool_or_skip("prometheus")
        self.promtool = tool_or_skip("promtool")
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)
        self.service_name = engine.unique_name("prom")
        self.port = engine.free_port()
        engine.create_service(self.client, self.service_name, replicas=0, port=self.port)
        self.addCleanup(engine.remove_service, self.client, self.service_name)
        self.metrics_port = engine.free_port()
        self.orchestrator = start_orchestrator(
            self, agent_config("prom", self.service_name, self.port),
            metrics_port=self.metrics_port, admin=AdminConfig(token=TOKEN))
        self.pool = client_pool(self)
        self.prometheus_url = self.start_prometheus()

    def start_prometheus(self) -> str:
        directory = Path(tempfile.mkdtemp(prefix="orchtest-prometheus-"))
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        (directory / "token").write_text(TOKEN)
        admin = self.orchestrator.admin_url.removeprefix("http://")
        (directory / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES / "alerts.yml")],
            "scrape_configs": [
                {"job_name": "orchestrator",
                 "static_configs": [{"targets": [f"127.0.0.1:{self.metrics_port}"]}]},
                {"job_name": "orchestrator-admin",
                 "authorization": {"type": "Bearer",
                                   "credentials_file": str(directory / "token")},
                 "static_configs": [{"targets": [admin]}]},
            ],
        }))
        port = engine.free_port()
        log = open(directory / "prometheus.log", "wb")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [self.prometheus, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)

        def stop():
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        self.addCleanup(stop)
        self.prometheus_log = directory / "prometheus.log"
        return f"http://127.0.0.1:{port}"

    async def query(self, expression: str) -> list[dict]:
        response = await treq.get(self.prometheus_url + "/api/v1/query",
                                  params={"query": expression}, pool=self.pool)
        body = json.loads(await response.content())
        assert body["status"] == "success", body
        return body["data"]["result"]

    async def until_ready(self) -> None:
        async def ready():
            try:
                response = await treq.get(self.prometheus_url + "/-/ready", pool=self.pool)
                await response.content()
            except Exception as error:
                raise AssertionError(f"not up yet: {error}") from None
            assert response.code == 200, response.code

        try:
            await engine.poll_until(ready, reactor, timeout=60, interval=0.2)
        except AssertionError:
            raise AssertionError("prometheus did not start: "
                                 + self.prometheus_log.read_text()[-2000:]) from None

    @inline
    async def test_a_real_wake_shows_in_prometheus_as_a_phase_histogram(self):
        await self.until_ready()

        async def both_targets_up():
            results = await self.query("up")
            assert sorted((r["metric"]["job"], r["value"][1]) for r in results) == [
                ("orchestrator", "1"), ("orchestrator-admin", "1")], results

        await engine.poll_until(both_targets_up, reactor, timeout=30, interval=0.5)

        async def reconciled():
            assert self.orchestrator.agent("prom").state.value == "sleeping"

        await engine.poll_until(reconciled, reactor, timeout=10, interval=0.05)
        response = await treq.get(self.orchestrator.proxy_url + "/",
                                  headers={"Host": "prom.localhost"}, pool=self.pool)
        await response.content()
        self.assertEqual(response.code, 503)

        async def ready():
            assert self.orchestrator.agent("prom").state.value == "ready"

        await engine.poll_until(ready, reactor, timeout=90, interval=0.1)

        async def phases_scraped():
            results = await self.query(
                'orchestrator_wake_phase_duration_seconds_count'
                '{job="orchestrator",agent="prom"}')
            phases = {r["metric"]["phase"]: float(r["value"][1]) for r in results}
            assert phases.get("scheduling") == 1.0 and phases.get("probing") == 1.0, results
            return phases

        await engine.poll_until(phases_scraped, reactor, timeout=30, interval=0.5)
        [wakes] = await self.query('orchestrator_wakes_total{job="orchestrator",agent="prom"}')
        self.assertEqual((wakes["metric"]["outcome"], wakes["value"][1]), ("ready", "1"))
        [quantile] = await self.query(
            'histogram_quantile(0.5, sum by (le) (orchestrator_wake_phase_duration_seconds_bucket'
            '{job="orchestrator",agent="prom",phase="scheduling"}))')
        self.assertGreater(float(quantile["value"][1]), 0.0)

        async def admin_scraped_too():
            # The same series through the admin listener, behind its token.
            [state] = await self.query(
                'orchestrator_agent_state{job="orchestrator-admin",agent="prom",state="ready"}')
            assert state["value"][1] == "1", state

        await engine.poll_until(admin_scraped_too, reactor, timeout=30, interval=0.5)
        requests = await self.query(
            'sum(orchestrator_swarm_calls_total{job="orchestrator",call="scale"})')
        self.assertGreaterEqual(float(requests[0]["value"][1]), 1.0)

    @inline
    async def test_promtool_finds_nothing_to_lint_in_the_exposition(self):
        response = await treq.get(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                  pool=self.pool)
        text = await response.content()
        self.assertIn(b"orchestrator_agent_state", text)

        def lint():
            return subprocess.run([self.promtool, "check", "metrics"], input=text,
                                  capture_output=True, timeout=60)

        done = await deferToThread(lint)
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, b""))
