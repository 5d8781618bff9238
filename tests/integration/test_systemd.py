"""
deploy/orchestrator.service under a real systemd: a container that boots systemd as
init, with this machine's Docker socket, runs the unit exactly as written (its whole
sandbox included). The orchestrator must start, reach the Docker engine through the
sandbox, run hardened, reload on `systemctl reload` and stop cleanly on `systemctl stop`.
"""

from __future__ import annotations

import json
import time

from docker.types import Ulimit
from twisted.trial.unittest import SynchronousTestCase

from . import engine

#: The open-file limits systemd itself gets on a host and hands to services by default
#: (soft 1,024, hard 524,288): the container starts with these, so the unit's LimitNOFILE
#: is what changes them, as on a host. (Where the engine's own hard limit is lower, the
#: container gets that, and the unit's limit is checked against it.)
HOST_NOFILE = (1024, 524288)
#: deploy/orchestrator.service's LimitNOFILE.
UNIT_NOFILE = 65536

#: The agent's state as the admin API has it (with Swarm's words, which the public
#: /api/health leaves out).
HEALTH = """
import json, sys, urllib.request
request = urllib.request.Request("http://127.0.0.1:9090/api/agents/probe")
body = urllib.request.urlopen(request, timeout=5).read().decode()
# "starting" until the first read of Swarm: no verdict yet, ask again (no quotes here:
# this runs as python3 -c QUOTED).
if json.loads(body)["status"] == "starting":
    sys.exit(1)
print(body)
"""


class SystemdServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = engine.engine_or_skip()
        image = engine.ensure_systemd_host(self.client)
        # What systemd needs to run as init in a container: its own mounts (SYS_ADMIN),
        # its own seccomp filters, a writable /run and the cgroup tree.
        soft, hard = HOST_NOFILE
        hard = min(hard, self.engine_nofile_hard_limit(image))
        self.nofile_limit = min(UNIT_NOFILE, hard)
        self.container = self.client.containers.run(
            image, detach=True, name=engine.unique_name("systemd"),
            labels={engine.TEST_LABEL: "1"},
            ulimits=[Ulimit(name="nofile", soft=min(soft, hard), hard=hard)],
            cap_add=["SYS_ADMIN"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            tmpfs={"/run": "", "/run/lock": ""},
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                     "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}})
        self.addCleanup(self.container.remove, force=True)

    def engine_nofile_hard_limit(self, image: str) -> int:
        """
        The open-file hard limit the engine gives a container; no container may raise its
        own above it.
        """
        output = self.client.containers.run(image, ["-c", "ulimit -Hn"], entrypoint="sh",
                                            remove=True).decode().strip()
        return 1 << 30 if output == "unlimited" else int(output)

    def run_in(self, command: str) -> str:
        code, output = self.container.exec_run(["sh", "-c", command])
        text = output.decode()
        self.assertEqual(code, 0, f"{command!r} exited {code}: {text}")
        return text.strip()

    def until(self, command: str, timeout: float = 60) -> str:
        """
        The output of C{command} in the container, once it succeeds.
        """
        deadline = time.monotonic() + timeout
        while True:
            code, output = self.container.exec_run(["sh", "-c", command])
            if code == 0:
                return output.decode().strip()
            if time.monotonic() > deadline:
                self.fail(f"{command!r} still fails after {timeout:g}s: {output.decode()}\n"
                          + self.journal())
            time.sleep(0.5)

    def journal(self) -> str:
        return self.container.exec_run(
            ["journalctl", "-u", "orchestrator", "--no-pager", "-n", "40"]).output.decode()

    def service(self, *properties: str) -> dict[str, str]:
        output = self.run_in(f"systemctl show orchestrator -p {','.join(properties)}")
        return dict(line.split("=", 1) for line in output.splitlines())

    def test_unit_runs_hardened_reloads_and_stops_cleanly(self) -> None:
        self.until("systemctl is-active orchestrator")
        # It serves, and it reached Swarm through the sandbox: the agent's service is
        # reported missing, not the engine unreachable.
        health = json.loads(self.until(f"python3 -c '{HEALTH}'"))
        self.assertEqual(health["agent"], "probe")
        self.assertEqual(health["status"], "degraded")
        self.assertIn("no Swarm service named 'orchtest-systemd-absent'", health["reason"])

        # Hardened: its own user, no capabilities, no new privileges, a seccomp filter,
        # and a read-only file system but for the paths the unit opens.
        pid = self.service("MainPID")["MainPID"]
        status = dict(line.split(":\t", 1) for line in
                      self.run_in(f"cat /proc/{pid}/status").splitlines() if ":\t" in line)
        uid = self.run_in("id -u orchestrator")
        self.assertEqual(status["Uid"].split()[0], uid)
        self.assertEqual(status["CapEff"], "0000000000000000")
        self.assertEqual(status["NoNewPrivs"], "1")
        self.assertEqual(status["Seccomp"], "2")
        root_options = self.run_in(f"awk '$5 == \"/\" {{print $6}}' /proc/{pid}/mountinfo")
        self.assertTrue(root_options.startswith("ro"), root_options)
        # Open files: the unit's LimitNOFILE, not systemd's default soft limit of 1,024.
        limits = self.run_in(f"grep 'open files' /proc/{pid}/limits").split()
        self.assertEqual(limits[3:5], [str(self.nofile_limit)] * 2)

        # systemctl reload: the same process applies the file again.
        self.run_in("systemctl reload orchestrator")
        self.until("journalctl -u orchestrator --no-pager | grep -q config.reloaded", timeout=10)
        self.assertEqual(self.service("MainPID", "ActiveState"),
                         {"MainPID": pid, "ActiveState": "active"})

        # systemctl stop: SIGTERM, the drain, a clean exit well before SIGKILL.
        self.run_in("systemctl stop orchestrator")
        self.assertEqual(self.service("ActiveState", "Result"),
                         {"ActiveState": "inactive", "Result": "success"})
        self.assertIn("Server Shut Down.", self.journal())
