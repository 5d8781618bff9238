"""
orchestrator-ctl's commands against the in-memory admin API (verified against the real
one by tests/admin/test_client_contract.py): tables, --json, wake --wait progress,
exit codes, one-line errors.
"""

from __future__ import annotations

import io
import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.admin.memory import FakeAdmin, FakeAgent
from orchestrator.cli.main import (
    EXIT_AGENT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_UNAUTHORIZED,
    EXIT_UNKNOWN_AGENT,
    Console,
    parser,
    run,
)

TOKEN = "t0ken-for-the-cli-tests"


class CommandTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.alpha = FakeAgent("alpha")
        self.admin = FakeAdmin([self.alpha, FakeAgent("steady", policy="always_on",
                                                      status="ready")],
                               clock=self.clock, token=TOKEN)

    def ctl(self, *argv, token=TOKEN, live=False):
        """
        Run one command to its end (the clock pumped as it waits): exit status, output,
        errors.
        """
        out, err = io.StringIO(), io.StringIO()
        arguments = parser().parse_args(list(argv))
        done = Deferred.fromCoroutine(run(arguments, self.admin.client(token),
                                          Console(out, err, live=live), self.clock))
        for _ in range(10_000):
            if done.called:
                break
            self.clock.advance(0.1)
        return self.successResultOf(done), out.getvalue(), err.getvalue()

    def test_agents_is_a_table(self):
        status, out, err = self.ctl("agents")
        lines = out.splitlines()
        self.assertEqual(status, EXIT_OK)
        self.assertEqual(lines[0].split()[:3], ["AGENT", "STATE", "POLICY"])
        self.assertEqual(lines[1].split()[:3], ["alpha", "sleeping", "on_demand"])
        self.assertIn("always-on: Swarm keeps it running", lines[2])

    def test_agents_as_json(self):
        status, out, _ = self.ctl("--json", "agents")
        self.assertEqual([a["agent"] for a in json.loads(out)["agents"]], ["alpha", "steady"])

    def test_agent_in_detail_says_why_it_is_awake(self):
        status, out, _ = self.ctl("agent", "steady")
        self.assertEqual(status, EXIT_OK)
        self.assertIn("awake because:  always-on: Swarm keeps it running", out)
        self.assertIn("leases:         0", out)

    def test_an_unknown_agent_is_one_line_and_exit_3(self):
        status, out, err = self.ctl("agent", "nobody")
        self.assertEqual((status, out, err),
                         (EXIT_UNKNOWN_AGENT, "", "orchestrator-ctl: no agent named 'nobody'\n"))

    def test_a_wrong_token_is_exit_6(self):
        status, _, err = self.ctl("agents", token="wrong")
        self.assertEqual((status, err),
                         (EXIT_UNAUTHORIZED, "orchestrator-ctl: a valid admin token is required\n"))

    def test_wake_without_wait_says_it_started(self):
        status, out, _ = self.ctl("wake", "alpha")
        self.assertEqual((status, out), (EXIT_OK, "alpha: starting (queued)\n"))

    def test_wake_wait_shows_each_phase_then_ready(self):
        status, out, _ = self.ctl("wake", "alpha", "--wait")
        lines = out.splitlines()
        self.assertEqual(status, EXIT_OK)
        self.assertEqual([line.split(", ")[1] for line in lines[:-1]],
                         ["queued", "scheduling", "probing"])
        self.assertTrue(lines[-1].startswith("alpha: ready after "), lines[-1])
        self.assertIn("queued 0.3s, scheduling 0.3s, probing 0.3s", lines[-1])

    def test_wake_wait_on_a_terminal_rewrites_one_line(self):
        status, out, _ = self.ctl("wake", "alpha", "--wait", live=True)
        self.assertEqual(out.count("\r\x1b[K"), 3)
        self.assertEqual(out.count("\n"), 2)

    def test_wake_wait_as_json_is_the_final_view(self):
        status, out, _ = self.ctl("--json", "wake", "alpha", "--wait")
        self.assertEqual(json.loads(out)["status"], "ready")

    def test_a_failed_wake_is_exit_1(self):
        self.alpha.fails_with = "No such image: agent:latest"
        status, _, err = self.ctl("wake", "alpha", "--wait")
        self.assertEqual((status, err), (EXIT_AGENT_FAILED,
                         "orchestrator-ctl: alpha is degraded: No such image: agent:latest\n"))

    def test_a_wait_that_runs_out_is_exit_5(self):
        self.alpha.phases = ("scheduling",) * 1000
        status, _, err = self.ctl("wake", "alpha", "--wait", "2")
        self.assertEqual(status, EXIT_TIMEOUT)
        self.assertIn("alpha is still starting (scheduling) after 2.0s", err)

    def test_always_on_agents_are_refused_with_exit_4(self):
        for command in ("wake", "sleep"):
            status, _, err = self.ctl(command, "steady")
            self.assertEqual(status, EXIT_REFUSED)
            self.assertIn("always-on", err)
            self.assertEqual(err.count("\n"), 1)

    def test_sleep(self):
        self.ctl("wake", "alpha", "--wait")
        status, out, _ = self.ctl("sleep", "alpha", "--wait")
        self.assertEqual((status, out), (EXIT_OK, "alpha: sleeping\n"))

    def test_events_one_line_each(self):
        self.ctl("wake", "alpha", "--wait")
        status, out, _ = self.ctl("events")
        self.assertEqual([line.split()[1:3] for line in out.splitlines()],
                         [["agent.wake", "alpha"], ["agent.ready", "alpha"]])

    def test_events_as_json_lines(self):
        self.ctl("wake", "alpha", "--wait")
        status, out, _ = self.ctl("--json", "events", "--type", "agent.ready")
        [event] = [json.loads(line) for line in out.splitlines()]
        self.assertEqual((event["event"], event["wake_seconds"]), ("agent.ready", 1.0))

    def test_events_of_one_agent(self):
        self.ctl("wake", "alpha", "--wait")
        self.admin.emit("agent.health_failed", "steady")
        status, out, _ = self.ctl("events", "--agent", "steady")
        self.assertEqual([line.split()[1] for line in out.splitlines()],
                         ["agent.health_failed"])

    def test_events_follow_prints_new_events_as_they_come(self):
        out, err = io.StringIO(), io.StringIO()
        arguments = parser().parse_args(["events", "--follow", "--limit", "2"])
        done = Deferred.fromCoroutine(run(arguments, self.admin.client(TOKEN),
                                          Console(out, err, live=False), self.clock))
        self.assertNoResult(done)
        self.admin.emit("agent.wake", "alpha", state="starting")
        self.assertNoResult(done)
        self.admin.emit("agent.ready", "alpha", state="ready")
        self.assertEqual(self.successResultOf(done), EXIT_OK)
        self.assertEqual([line.split()[1] for line in out.getvalue().splitlines()],
                         ["agent.wake", "agent.ready"])

    def test_leases_and_routes_when_there_are_none(self):
        self.assertEqual(self.ctl("leases")[1], "no leases\n")
        self.assertEqual(self.ctl("routes", "alpha")[1], "no registered routes\n")
        self.assertEqual(self.ctl("--json", "leases")[1], "[]\n")

    def test_config_is_json(self):
        status, out, _ = self.ctl("config")
        self.assertEqual(json.loads(out)["admin"]["token"], "<redacted>")
