"""
Where the orchestrator's time goes under load: py-spy samples it while wrk drives it,
and the collapsed stacks (kept in bench/out/) are summarised by function, by file and
by area.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from pathlib import Path

import attrs

from bench.harness import LOAD_CPU, Bench, BenchError
from bench.measure import parse_wrk, wrk_command
from bench.suites.base import Options, Section, number, table

PROFILE_NAME = "profile.collapsed.txt"
#: Samples per second. py-spy pauses the process for each sample (its non-blocking mode
#: loses about half of them to torn stacks here), which costs the proxy some throughput.
RATE = 200
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: Self time is also grouped into these areas, the first matching file prefix wins.
AREAS = [
    ("orchestrator (our code)", ("orchestrator/",)),
    ("twisted.web server (http.py, server.py)", ("twisted/web/http.py", "twisted/web/server.py",
                                                "twisted/web/resource.py")),
    ("twisted.web headers", ("twisted/web/http_headers.py", "twisted/web/_abnf.py")),
    ("connecting (endpoints, resolver, threads)", ("twisted/internet/endpoints.py",
                                                  "twisted/internet/_resolver.py",
                                                  "twisted/internet/threads.py",
                                                  "twisted/python/threadpool.py",
                                                  "twisted/_threads/", "socket.py",
                                                  "threading.py", "queue.py")),
    ("Deferreds", ("twisted/internet/defer.py",)),
    ("reactor and TCP transport", ("twisted/internet/",)),
    ("logging", ("twisted/logger/", "twisted/python/log.py")),
    ("other Twisted", ("twisted/",)),
    ("zope.interface", ("zope/",)),
]


@attrs.frozen
class Frame:
    function: str
    file: str

    @property
    def label(self) -> str:
        return f"`{self.function}` ({self.file})"


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "?")
    return Frame(match.group("function"), shorten(match.group("file")))


def shorten(path: str) -> str:
    """
    A source path from where the package starts: C{.../site-packages/twisted/web/http.py}
    -> C{twisted/web/http.py} (py-spy mostly does this already).
    """
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    if path.startswith("interface/"):
        # py-spy names files relative to their sys.path entry, which for the zope
        # namespace package drops "zope/".
        return "zope/" + path
    return path.split("/work/main/", 1)[-1]


def area_of(file: str) -> str:
    for area, prefixes in AREAS:
        if file.startswith(prefixes):
            return area
    return "Python stdlib and other" if file != "?" else "unknown"


#: Hot spots worth following from run to run: (what it is, function, file), measured
#: inclusively. The first two are the totals the others are part of.
WATCH = [
    ("the whole proxied request in our resource", "ProxyResource.render",
     "orchestrator/proxy/root.py"),
    ("reading backend responses (orchestrator/http/connection.py)",
     "BackendConnection.dataReceived", "orchestrator/http/connection.py"),
    ("sending a request to the backend", "Attempt.start", "orchestrator/http/client.py"),
    ("parsing a backend response head", "BackendConnection._parse_head",
     "orchestrator/http/connection.py"),
    ("opening a backend connection", "Attempt._connect", "orchestrator/http/client.py"),
    ("connecting once the backend's name is resolved (thread pool round trip)",
     "GAIResolver.resolveHostName.<locals>.resolveAndProcess", "twisted/internet/_resolver.py"),
    ("closing a backend connection", "_BaseBaseClient.connectionLost",
     "twisted/internet/tcp.py"),
    ("log events (e.g. per-connection factory messages)", "Logger.emit",
     "twisted/logger/_logger.py"),
    ("getsockname per request (Request.getHost)", "HTTPChannel.getHost", "twisted/web/http.py"),
    ("request headers for the backend (orchestrator/http/headers.py)", "forwarded_request_headers",
     "orchestrator/http/headers.py"),
    ("relaying the response status and headers to the client", "BackendExchange._relay",
     "orchestrator/proxy/exchange.py"),
    ("the response timeout armed per request", "BackendExchange._arm_timeout",
     "orchestrator/proxy/exchange.py"),
]
#: How many of WATCH are totals rather than costs of their own.
WATCH_TOTALS = 2

#: Leaf functions of a worker thread that is waiting for work, not working.
IDLE_WAITS = frozenset({"Condition.wait", "Event.wait", "Queue.get", "SimpleQueue.get",
                        "Thread.join", "Thread._wait_for_tstate_lock", "sleep"})


@attrs.frozen
class Profile:
    """
    Collapsed stacks summed up. The reactor thread's samples are counted per frame (self
    and inclusive), per file and per area; worker threads (thread pools: name resolution,
    Docker calls) only by the leaf frames where they were working.
    """

    samples: int
    self_counts: Counter
    inclusive_counts: Counter
    file_counts: Counter
    area_counts: Counter
    worker_counts: Counter


def analyse(collapsed: str) -> Profile:
    """
    Sum py-spy's raw (collapsed) output: C{frame;frame;leaf COUNT} per line.
    """
    self_counts: Counter = Counter()
    inclusive_counts: Counter = Counter()
    file_counts: Counter = Counter()
    area_counts: Counter = Counter()
    worker_counts: Counter = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(text) for text in stack.split(";")]
        leaf = frames[-1]
        if frames[0].function == "Thread._bootstrap":
            if leaf.function not in IDLE_WAITS:
                worker_counts[leaf] += count
            continue
        samples += count
        self_counts[leaf] += count
        file_counts[leaf.file] += count
        area_counts[area_of(leaf.file)] += count
        for frame in set(frames):
            inclusive_counts[frame] += count
    return Profile(samples, self_counts, inclusive_counts, file_counts, area_counts,
                   worker_counts)


class ProfileSuite:
    """
    wrk with the usual connections for a few seconds more than the profile; py-spy (on
    CPU 0 with wrk) records the orchestrator's stacks, grouped by function.
    """

    name = "profile"
    title = "Profile of the orchestrator under load"

    def run(self, bench: Bench, options: Options) -> Section:
        if shutil.which("py-spy") is None:
            return Section(self.title, "Not measured: py-spy is not installed "
                           "(`pip install py-spy`).", ("Profile: skipped (no py-spy).",))
        output = bench.out / PROFILE_NAME
        seconds = options.profile_seconds
        with bench.scope():
            backend = bench.nginx("profile-backend", "backend.conf", cpu=LOAD_CPU)
            orchestrator = bench.orchestrator("profile-orchestrator", backend_port=backend.port)
            load = bench.spawn(
                "profile-wrk",
                wrk_command(orchestrator.url(), connections=options.connections,
                            duration=seconds + 3),
                cpu=LOAD_CPU, purpose="load while profiling")
            time.sleep(1.0)
            bench.run(["py-spy", "record", "--pid", str(orchestrator.process.pid),
                       "--duration", f"{seconds:g}", "--rate", str(RATE), "--function",
                       "--format", "raw", "--output", str(output)],
                      cpu=LOAD_CPU, timeout=seconds + 60, purpose="profile (collapsed stacks)")
            load.popen.wait(timeout=seconds + 30)
            rate = parse_wrk(load.log.read_text())[0]
        profile = analyse(output.read_text())
        if not profile.samples:
            raise BenchError(f"py-spy recorded no samples ({output})")
        return self._section(profile, rate, options)

    def _section(self, profile: Profile, rate: float, options: Options) -> Section:
        total = profile.samples

        def share(count: int) -> str:
            return f"{100 * count / total:.1f}%"

        top_self = [[frame.label, share(count)]
                    for frame, count in profile.self_counts.most_common(15)]
        # Frames in (nearly) every sample are the reactor loop itself: no information.
        inclusive = [(frame, count) for frame, count in profile.inclusive_counts.most_common()
                     if count < 0.97 * total][:20]
        top_inclusive = [[frame.label, share(count)] for frame, count in inclusive]
        areas = [[area, share(count)] for area, count in profile.area_counts.most_common()]
        files = [[f"`{file}`", share(count)]
                 for file, count in profile.file_counts.most_common(12)]
        workers = [[frame.label, share(count)]
                   for frame, count in profile.worker_counts.most_common(8)]
        watched = [(what, Frame(function, file),
                    profile.inclusive_counts.get(Frame(function, file), 0))
                   for what, function, file in WATCH]
        watch_rows = [[what, frame.label, share(count)] for what, frame, count in watched]
        costs = sorted(watched[WATCH_TOTALS:], key=lambda item: item[2], reverse=True)[:3]
        summary = (
            "Profile (share of the reactor thread's time): "
            + "; ".join(f"{what} {share(count)}" for what, _, count in costs)
            + f"; top area: {profile.area_counts.most_common(1)[0][0]} "
            f"{share(profile.area_counts.most_common(1)[0][1])} (self time).",
        )
        body = "\n\n".join([
            f"py-spy {RATE} Hz for {options.profile_seconds:g} s while wrk drove "
            f"{options.connections} connections ({number(rate)} req/s during the profile; "
            f"py-spy pauses the process per sample, so this is below the unprofiled "
            f"rate). {total} samples of the reactor thread running Python (idle time in "
            f"epoll is not counted; percentages are of these samples). Raw collapsed stacks: `bench/out/{PROFILE_NAME}` "
            f"(open in https://www.speedscope.app or feed to flamegraph.pl).",
            "Watch list: known hot spots of the request path, inclusive (the function and "
            "everything it calls), so changes show up from run to run:",
            table(["What", "Function", "Inclusive"], watch_rows),
            "Self time by area (the leaf frame's file):",
            table(["Area", "Share of samples"], areas),
            "Self time by function (top 15):",
            table(["Function", "Self"], top_self),
            "Inclusive time (the function or anything it calls; frames in every sample "
            "left out):",
            table(["Function", "Inclusive"], top_inclusive),
            "Self time by file:",
            table(["File", "Self"], files),
            "Worker threads (Twisted's thread pool, e.g. name resolution, and the Docker "
            "pool) while working, not waiting; percent of the reactor thread's samples:",
            table(["Function", "Samples"], workers) if workers else "None.",
        ])
        return Section(self.title, body, summary)


def load_profile(path: Path) -> Profile:
    """
    Summarise a saved profile again (C{python3 -c 'from bench.suites.profile import *;
    ...'}) without rerunning the bench.
    """
    return analyse(path.read_text())
