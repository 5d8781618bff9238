"""
The bench's machinery: processes pinned to a CPU that are always stopped, launchers for
nginx and the orchestrator, free loopback ports, and the log of every command run (it is
copied into the report, so the numbers can be reproduced by hand).

Everything listens on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs
import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
TEMPLATES = BENCH / "nginx"

#: The load generator (wrk, curl, py-spy) and the backends run here...
LOAD_CPU = 0
#: ...and the proxy under test (nginx or the orchestrator) has this CPU to itself.
PROXY_CPU = 1
#: The Host the orchestrator routes to the benchmark agent.
BENCH_HOST = "bench.localhost"
AGENT_NAME = "bench"

_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """
    A measurement could not be made (a process died, an answer was wrong); the message
    says what and where its log is.
    """


@attrs.frozen
class Process:
    """
    A process started by the bench, in its own session, logging to C{log}.
    """

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@attrs.frozen
class Server:
    """
    A server the bench started: C{port} on 127.0.0.1, its process, where its files are.
    """

    name: str
    port: int
    process: Process
    directory: Path

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@attrs.frozen
class BenchAgent:
    """
    An always-on agent in the bench's orchestrator config: its name, Host and backend.
    """

    name: str
    host: str
    backend_port: int | str


@attrs.frozen
class CommandRecord:
    """
    One command the bench ran, for the report: which suite, why, and the command line.
    """

    suite: str
    purpose: str
    command: str


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """
    C{argv} run on one CPU (C{taskset -c CPU argv}), or as is for C{None}.
    """
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def free_port() -> int:
    """
    A TCP port free on 127.0.0.1 right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child before exec: if the bench itself is killed (even with SIGKILL),
    # the kernel sends SIGTERM to what it started, so nothing outlives it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Bench:
    """
    One run of the bench: a temporary directory, the processes started (stopped when
    their L{scope} ends, and all of them when the bench ends, Ctrl-C included), and the
    record of commands.

    @ivar tmp: scratch space (configs, logs, the 1 GiB file); removed by the caller.
    @ivar out: C{bench/out}, kept after the run (profiles, raw tool output).
    """

    def __init__(self, tmp: Path, out: Path) -> None:
        self.tmp = tmp
        self.out = out
        self.commands: list[CommandRecord] = []
        self.configs: dict[str, str] = {}
        self.suite = "setup"
        self.processes: list[Process] = []
        self._scopes = [contextlib.ExitStack()]

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc_info) -> None:
        while self._scopes:
            self._scopes.pop().close()

    @contextlib.contextmanager
    def scope(self):
        """
        Processes started inside this block are stopped when it ends.
        """
        stack = contextlib.ExitStack()
        self._scopes.append(stack)
        try:
            yield
        finally:
            self._scopes.remove(stack)
            stack.close()

    # Commands ------------------------------------------------------------------------

    def record(self, purpose: str, argv: list[str]) -> None:
        """
        Note a command for the report, with the temporary directory written C{$BENCH_TMP}
        and paths relative to the repository.
        """
        text = shlex.join(argv)
        text = text.replace(str(self.tmp), "$BENCH_TMP").replace(str(REPO) + "/", "")
        self.commands.append(CommandRecord(self.suite, purpose, text))

    def run(self, argv: list[str], *, cpu: int | None, timeout: float, purpose: str,
            check: bool = True) -> subprocess.CompletedProcess:
        """
        Run a short command to completion (bounded by C{timeout} seconds).
        """
        argv = pinned(argv, cpu)
        self.record(purpose, argv)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as expired:
            raise BenchError(f"{argv[0]} did not finish within {timeout:g}s: {text_of(argv)}") \
                from expired
        if check and done.returncode != 0:
            raise BenchError(f"{text_of(argv)} exited with {done.returncode}:\n"
                             f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done

    def spawn(self, name: str, argv: list[str], *, cpu: int | None, purpose: str,
              env: dict[str, str] | None = None, stop_signal: int = signal.SIGTERM,
              record: bool = True) -> Process:
        """
        Start a long-running process; it is stopped (C{stop_signal}, then SIGKILL) when
        the current L{scope} ends.
        """
        argv = pinned(argv, cpu)
        if record:
            self.record(purpose, argv)
        log = self.tmp / f"{name}.out"
        with open(log, "ab") as output:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_die_with_parent,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        self._scopes[-1].callback(stop, process, stop_signal)
        return process

    # Servers -------------------------------------------------------------------------

    def nginx(self, name: str, template: str, *, cpu: int, **values) -> Server:
        """
        Start nginx (one worker, on C{cpu}) from C{bench/nginx/<template>}, filling in
        C{@PORT@}, C{@PREFIX@}, C{@DATA@}, C{@USER@} and C{@KEY@} for each C{key=value}.
        """
        prefix = self.tmp / name
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        port = free_port()
        fields = {
            "PORT": str(port),
            "PREFIX": str(prefix),
            "DATA": str(self.data),
            # As root, nginx's workers would switch to "nobody" and lose access to the
            # bench's private temporary directory.
            "USER": "user root;" if os.geteuid() == 0 else "",
            **{key.upper(): str(value) for key, value in values.items()},
        }
        text = fill_template((TEMPLATES / template).read_text(), fields, template)
        config = prefix / "nginx.conf"
        config.write_text(text)
        process = self.spawn(
            name,
            ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config)],
            cpu=cpu, purpose=f"{name}: nginx from bench/nginx/{template}",
        )
        try:
            wait_for_port(process, port, timeout=10)
        except BenchError as error:
            errors = (prefix / "error.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"{error}\n{errors}") from None
        return Server(name, port, process, prefix)

    def orchestrator(self, name: str, *, backend_port: int,
                     agents: tuple[BenchAgent, ...] = (), cpu: int = PROXY_CPU) -> Server:
        """
        Start the orchestrator from this repository with the always-on agent C{bench}
        (Host C{bench.localhost}) in front of C{127.0.0.1:backend_port}, plus C{agents};
        return once C{/api/health} says the agents are ready.
        """
        port, admin_port = free_port(), free_port()
        agents = (BenchAgent(AGENT_NAME, BENCH_HOST, backend_port), *agents)
        config = yaml.safe_load(orchestrator_config(port, admin_port, agents))
        process, directory = self.twistd_orchestrator(name, config, {
            str(port): "<proxy port>", str(admin_port): "<admin port>",
            **{str(agent.backend_port): f"<{agent.name} backend port>" for agent in agents},
        }, cpu=cpu)
        try:
            for agent in agents:
                wait_until_ready(process, port, agent.host, timeout=60)
        except BenchError as error:
            log = directory / "twistd.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) \
                if log.exists() else ""
            raise BenchError(f"{error}\n{tail}") from None
        return Server(name, port, process, directory)

    def twistd_orchestrator(self, name: str, config: dict, placeholders: dict[str, str], *,
                            cpu: int = PROXY_CPU) -> tuple[Process, Path]:
        """
        Write C{config} as the orchestrator's YAML and start C{twistd orchestrator} from
        this repository on it; the report shows the YAML with each value of
        C{placeholders} (a port, a service name) replaced by what it stands for.
        """
        directory = self.tmp / name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "orchestrator.yaml"
        text = yaml.safe_dump(config, sort_keys=False)
        path.write_text(text)
        for value, label in placeholders.items():
            text = text.replace(value, label)
        self.configs[f"{name}: orchestrator.yaml"] = text
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
        argv = [twistd(), "-n", "--pidfile=", f"--logfile={directory / 'twistd.log'}",
                "orchestrator", "--config", str(path)]
        process = self.spawn(name, argv, cpu=cpu, env=env,
                             purpose=f"{name}: with PYTHONPATH=. (the repository)")
        return process, directory

    def sink(self, name: str, *, cpu: int) -> Server:
        """
        Start the upload sink (L{bench.sink}) on C{cpu}.
        """
        port = free_port()
        process = self.spawn(name, [sys.executable, "-m", "bench.sink", str(port)], cpu=cpu,
                             purpose=f"{name}: reads and counts request bodies",
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_for_port(process, port, timeout=10)
        return Server(name, port, process, self.tmp)

    @property
    def data(self) -> Path:
        """
        A directory for files the backends serve.
        """
        path = self.tmp / "data"
        path.mkdir(exist_ok=True)
        return path


def fill_template(text: str, fields: dict[str, str], name: str) -> str:
    """
    C{text} with each C{@KEY@} replaced by C{fields["KEY"]}; an unknown key is an error.
    """

    def value(match: re.Match) -> str:
        key = match.group(1)
        if key not in fields:
            raise BenchError(f"{name}: no value for @{key}@")
        return fields[key]

    return re.sub(r"@([A-Z_]+)@", value, text)


def text_of(argv: list[str]) -> str:
    return shlex.join(argv)


def stop(process: Process, stop_signal: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """
    Stop C{process}: C{stop_signal}, then SIGKILL to its whole session after C{grace}
    seconds. The session is the bench's own (each process is started in a new one), so
    nginx's workers go with their master.
    """
    popen = process.popen
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, stop_signal)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5)


def wait_for_port(process: Process, port: int, timeout: float) -> None:
    """
    Wait until something accepts connections on C{127.0.0.1:port}.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise BenchError(f"{process.name} exited with {process.popen.returncode}:\n"
                             f"{process.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{process.name} did not listen on port {port} within {timeout:g}s")


def agent_health(port: int, host: str = BENCH_HOST) -> dict:
    """
    The orchestrator's C{GET /api/health} body for C{host}.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/api/health", headers={"Host": host})
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def wait_until_ready(process: Process, port: int, host: str, timeout: float) -> None:
    """
    Wait until the orchestrator's agent for C{host} reports C{ready}.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not process.alive():
            raise BenchError(f"{process.name} exited with {process.popen.returncode}:\n"
                             f"{process.log_tail()}")
        try:
            body = agent_health(port, host)
        except (OSError, ValueError, http.client.HTTPException) as error:
            last = str(error) or type(error).__name__
        else:
            if body.get("status") == "ready":
                return
            last = json.dumps(body)
        time.sleep(0.1)
    raise BenchError(f"{process.name} not ready within {timeout:g}s (last: {last}); "
                     f"log: {process.log}")


def orchestrator_config(port: int | str, admin_port: int | str,
                        agents: tuple[BenchAgent, ...]) -> str:
    """
    The orchestrator's YAML for the bench: always-on agents in front of local backends,
    listeners on loopback, a short drain so SIGTERM is quick.
    """
    config = {
        "listen": {
            "proxy": f"tcp:{port}:interface=127.0.0.1",
            "admin": f"tcp:{admin_port}:interface=127.0.0.1",
        },
        "shutdown": {"drain_timeout": "2s"},
        "agents": {
            agent.name: {
                "backend": f"http://127.0.0.1:{agent.backend_port}",
                "hosts": [agent.host],
                # Always-on: no Swarm service is needed. Without one the agent is
                # degraded after each reconciliation with Swarm (it still gets traffic)
                # and ready again after the next probe, hence the short interval.
                "policy": "always_on",
                "health": {"path": "/", "interval": "1s", "timeout": "2s"},
            }
            for agent in agents
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def twistd() -> str:
    """
    The twistd of the Python running the bench (not a pyenv shim: its pid must be the
    server's, for /proc and py-spy).
    """
    beside = Path(sys.executable).parent / "twistd"
    return str(beside) if beside.exists() else (shutil.which("twistd") or "twistd")


def tool_version(argv: list[str]) -> str:
    """
    The first line a C{--version}-like command prints, or "not installed".
    """
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, str]:
    """
    What the numbers depend on: CPUs, kernel, and the versions of everything measured.
    """
    import twisted

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                            "orchestrator", "twisted"], capture_output=True, text=True).stdout
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": cpu_model(),
        "Kernel": platform.release(),
        "Memory": _memory_total(),
        "Python": platform.python_version() + f" ({sys.executable})",
        "Twisted": twisted.__version__,
        "nginx": tool_version(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": tool_version(["wrk", "-v"]).split(" Copyright")[0],
        "curl": tool_version(["curl", "--version"]).split(" (")[0],
        "py-spy": tool_version(["py-spy", "--version"]),
        "Orchestrator commit": commit + (" (with uncommitted changes in orchestrator/)"
                                         if dirty.strip() else ""),
    }


def _memory_total() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"
