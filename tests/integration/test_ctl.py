"""
orchestrator-ctl as a process, against a real admin listener in front of a real Swarm
service: every command, --json parsed, the progress line of wake --wait, exit codes;
and the event stream resumed after a disconnect, losing nothing still buffered.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import treq
import treq.client
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent

from orchestrator.admin.client import HTTPAdminClient
from orchestrator.config.model import AdminConfig, IdleConfig, Policy
from tests.helpers import inline

from . import engine
from .running import agent_config, start_orchestrator
from .test_wake import client_pool

TOKEN = "ctl-test-token-0123456789abcdef"


class CtlTests(TestCase):
    timeout = 300

    def setUp(self):
        self.client = engine.engine_or_skip()
        engine.ensure_test_image(self.client)
        self.names = {}
        agents = []
        for name, replicas, policy in (("ctl", 0, Policy.ON_DEMAND),
                                       ("ctlon", 1, Policy.ALWAYS_ON)):
            service = engine.unique_name(name)
            port = engine.free_port()
            engine.create_service(self.client, service, replicas=replicas, port=port)
            self.addCleanup(engine.remove_service, self.client, service)
            self.names[name] = service
            agents.append(agent_config(name, service, port, policy=policy,
                                       idle=IdleConfig(timeout=600, drain_timeout=1)))
        self.orchestrator = start_orchestrator(self, *agents, admin=AdminConfig(token=TOKEN))
        token_file = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)
        token_file.write(TOKEN + "\n")
        token_file.close()
        self.addCleanup(os.unlink, token_file.name)
        self.environ = {key: value for key, value in os.environ.items()
                        if not key.startswith("ORCHESTRATOR_")}
        self.environ.update({"ORCHESTRATOR_ADMIN_URL": self.orchestrator.admin_url,
                             "ORCHESTRATOR_ADMIN_TOKEN_FILE": token_file.name,
                             "ORCHESTRATOR_CTL_CONFIG": os.devnull})

    async def ctl(self, *argv, environ=None):
        """
        Run orchestrator-ctl; its output, errors and exit status.
        """
        out, err, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "orchestrator.cli", *argv],
            env=environ or self.environ, reactor=reactor)
        return out.decode(), err.decode(), status

    async def until_reconciled(self):
        async def reconciled():
            assert self.orchestrator.agent("ctl").state.value == "sleeping"
            assert self.orchestrator.agent("ctlon").state.value == "ready"

        await engine.poll_until(reconciled, reactor, timeout=30, interval=0.1)

    @inline
    async def test_every_command(self):
        await self.until_reconciled()

        out, err, status = await self.ctl("agents")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[0].split()[:3], ["AGENT", "STATE", "POLICY"])
        self.assertIn("always-on: Swarm keeps it running", out)
        out, _, status = await self.ctl("--json", "agents")
        listing = json.loads(out)
        self.assertEqual({a["agent"]: a["status"] for a in listing["agents"]},
                         {"ctl": "sleeping", "ctlon": "ready"})

        # wake --wait: a progress line through the phases (a log: one line per phase).
        out, err, status = await self.ctl("wake", "ctl", "--wait", "90")
        self.assertEqual((status, err), (0, ""), out)
        lines = out.splitlines()
        self.assertTrue(lines[-1].startswith("ctl: ready after "), out)
        self.assertIn("scheduling", lines[-1])
        self.assertTrue(all(line.startswith("ctl: starting") for line in lines[:-1]), out)
        self.assertIn("ctl: starting, scheduling", out)

        out, _, status = await self.ctl("--json", "wake", "ctl")
        self.assertEqual((status, json.loads(out)["status"]), (0, "ready"))
        out, _, status = await self.ctl("agent", "ctl")
        self.assertEqual(status, 0)
        self.assertIn("awake because:  last activity", out)
        self.assertIn("recent wakes:   1", out)
        out, _, status = await self.ctl("--json", "agent", "ctl")
        view = json.loads(out)
        self.assertEqual(set(view["last_wake"]["phases"]) >= {"scheduling", "probing"}, True)

        out, _, status = await self.ctl("--json", "leases")
        self.assertEqual((status, json.loads(out)), (0, []))
        out, _, status = await self.ctl("routes")
        self.assertEqual((status, out), (0, "no registered routes\n"))
        out, _, status = await self.ctl("config")
        shown = json.loads(out)
        self.assertEqual((status, shown["admin"]["token"]), (0, "<redacted>"))
        self.assertNotIn(TOKEN, out)

        out, _, status = await self.ctl("sleep", "ctl", "--wait", "60")
        self.assertEqual((status, out), (0, "ctl: sleeping\n"))
        self.assertEqual(self.client.api.inspect_service(self.names["ctl"])["Spec"]["Mode"]
                         ["Replicated"]["Replicas"], 0)

        out, _, status = await self.ctl("events", "--type", "agent.*")
        kinds = [line.split()[1] for line in out.splitlines() if " ctl " in line]
        self.assertEqual(kinds[-3:], ["agent.wake", "agent.ready", "agent.sleep"])
        out, _, status = await self.ctl("--json", "events", "--type", "agent.ready")
        [ready] = [json.loads(line) for line in out.splitlines()
                   if json.loads(line)["agent"] == "ctl"]
        self.assertIn("scheduling", ready["phases"])

        # Errors: one line each, and an exit status a script can use.
        out, err, status = await self.ctl("wake", "ctlon")
        self.assertEqual((status, err.count("\n")), (4, 1), err)
        out, err, status = await self.ctl("agent", "nobody")
        self.assertEqual((status, err), (3, "orchestrator-ctl: no agent named 'nobody'\n"))
        wrong = dict(self.environ, ORCHESTRATOR_ADMIN_TOKEN="wrong-token")
        del wrong["ORCHESTRATOR_ADMIN_TOKEN_FILE"]
        out, err, status = await self.ctl("agents", environ=wrong)
        self.assertEqual((status, err), (6, "orchestrator-ctl: a valid admin token is required\n"))

    @inline
    async def test_events_follow_prints_a_wake_as_it_happens(self):
        await self.until_reconciled()
        following = getProcessOutputAndValue(
            sys.executable, ["-m", "orchestrator.cli", "--json", "events", "--follow",
                             "--agent", "ctl", "--type", "agent.ready", "--limit", "1"],
            env=self.environ, reactor=reactor)

        async def subscribed():
            assert self.orchestrator.service.event_stream.subscriber_count == 1

        await engine.poll_until(subscribed, reactor, timeout=30, interval=0.1)
        response = await treq.get(self.orchestrator.proxy_url + "/",
                                  headers={"Host": "ctl.localhost"}, pool=client_pool(self))
        await response.content()
        out, err, status = await following
        self.assertEqual((status, err.decode()), (0, ""))
        [event] = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual((event["event"], event["agent"]), ("agent.ready", "ctl"))


class StreamResumeTests(TestCase):
    """
    The event stream over a real connection: a client that lost it and comes back with
    its Last-Event-ID gets every event it missed that is still buffered, once.
    """

    timeout = 180

    @inline
    async def test_resume_after_a_disconnect_loses_no_buffered_event(self):
        client = engine.engine_or_skip()
        engine.ensure_test_image(client)
        service, port = engine.unique_name("resume"), engine.free_port()
        engine.create_service(client, service, replicas=0, port=port)
        self.addCleanup(engine.remove_service, client, service)
        orchestrator = start_orchestrator(
            self, agent_config("resume", service, port,
                               idle=IdleConfig(timeout=600, drain_timeout=1)),
            admin=AdminConfig(token=TOKEN))
        http = treq.client.HTTPClient(Agent(reactor, pool=client_pool(self)))
        admin = HTTPAdminClient(orchestrator.admin_url, TOKEN, http=http)

        first: list[dict] = []
        following = await admin.follow(first.append)
        orchestrator.service.bus.emit("swarm.reconnected", None)

        async def got_one():
            assert "swarm.reconnected" in [e["event"] for e in first], first

        await engine.poll_until(got_one, reactor, timeout=10, interval=0.05)
        following.stop()
        await following.ended
        last_seen = following.last_event_id

        # Missed while disconnected: a whole wake and a sleep.
        agent = orchestrator.agent("resume")
        await agent.wake("test")
        await agent.sleep("test")
        missed = [streamed.as_dict() for streamed in orchestrator.service.event_buffer.recent()
                  if streamed.id.seq > int(last_seen.split(".")[1])]
        self.assertEqual([e["event"] for e in missed if e["agent"] == "resume"][-3:],
                         ["agent.wake", "agent.ready", "agent.sleep"])

        second: list[dict] = []
        resumed = await admin.follow(second.append, last_event_id=last_seen)

        async def caught_up():
            assert [e["id"] for e in second] == [e["id"] for e in missed], (second, missed)

        await engine.poll_until(caught_up, reactor, timeout=10, interval=0.05)
        orchestrator.service.bus.emit("swarm.disconnected", None)

        async def live_again():
            assert second[-1]["event"] == "swarm.disconnected", second

        await engine.poll_until(live_again, reactor, timeout=10, interval=0.05)
        self.assertEqual(len({e["id"] for e in second}), len(second))
        resumed.stop()
        await resumed.ended
