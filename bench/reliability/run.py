"""
bench/reliability/run: what the front door holds, in figures, written to
docs/reliability.md. The parts run in order; each starts what it needs and stops it.

    bench/reliability/run                      # everything but the dockerd restart
    bench/reliability/run --before /tmp/main   # also main's tree, for before/after
    bench/reliability/run --only corpus,fuzz   # some parts, to bench/out/reliability-only.md
    bench/reliability/run --restart-dockerd    # also restart the shared dockerd mid-wake

--restart-dockerd stops the machine's Docker engine (every container on it, everyone's)
and starts it again: run it only when nothing else uses the engine. Everything else
runs on loopback and on services of its own (orchtest-rel-*), removed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import attrs

from bench.harness import REPO, Bench, BenchError, machine_facts
from bench.reliability import availability, fuzz, signals
from bench.reliability.availability import Outcome
from bench.suites.base import Section, table
from tests.corpus import load_corpus

DOCS = REPO / "docs" / "reliability.md"
OUT = REPO / "bench" / "out"
PARTS = ("corpus", "availability", "signals", "swarm", "fuzz")


@attrs.frozen
class Options:
    count: int = 2000
    addresses: int = 50
    hold: float = 45.0
    ramp: float = 5.0
    fuzz_seconds: float = 30.0
    websockets: int = 1000


QUICK = Options(count=300, hold=35.0, fuzz_seconds=5.0, websockets=200)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/reliability/run",
                                     description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated parts (of: {', '.join(PARTS)})")
    parser.add_argument("--quick", action="store_true", help="fewer connections, shorter runs")
    parser.add_argument("--before", type=Path, help="another tree (main's) to measure too")
    parser.add_argument("--restart-dockerd", action="store_true",
                        help="restart the shared Docker engine mid-wake (see above)")
    parser.add_argument("--output", type=Path, help=f"the report (default {DOCS})")
    return parser.parse_args(argv)


# Parts ----------------------------------------------------------------------------


def corpus_part(bench: Bench, options: Options, before: Path | None) -> Section:
    from bench.reliability.corpus_replay import HTTP_HOST, WS_HOST, replay_all

    runs = {}
    for label, tree in (("this tree", REPO), *((("before", before),) if before else ())):
        with bench.scope():
            record = bench.tmp / f"corpus-{label.replace(' ', '-')}.jsonl"
            record.write_text("")
            corpus_file = REPO / "tests" / "corpus" / "hostile.yaml"
            _, http_port, ws_port = availability.start_backend(bench, "backend-corpus", record,
                                                               corpus_file)
            agents = {"corpus": availability.always_on(http_port, HTTP_HOST),
                      "ws": availability.always_on(ws_port, WS_HOST)}
            agents["ws"]["health"] = {"path": "/", "interval": "1s"}
            _, port, _, _ = availability.start_orchestrator(bench, "orchestrator-corpus",
                                                            tree=tree, agents=agents)
            availability.wait_routable(port, HTTP_HOST)
            time.sleep(1)
            runs[label] = replay_all(port, http_port, record)
    results = runs["this tree"]
    cases = load_corpus()
    items = sorted({case.item for case in cases}, key=lambda i: (not i.isdigit(), i.zfill(3)))
    rows = []
    for item in items:
        mine = [r for r in results if r.case.item == item and not r.skipped]
        row = [item if item.isdigit() else item, str(sum(c.item == item for c in cases)),
               f"{sum(r.passed for r in mine)} / {len(mine)}"]
        if "before" in runs:
            old = [r for r in runs["before"] if r.case.item == item and not r.skipped]
            row.append(f"{sum(r.passed for r in old)} / {len(old)}")
        rows.append(row)
    header = ["issue item", "cases", "pass over sockets"] + (["before"] if "before" in runs else [])
    failures = [r for r in results if not r.passed]
    skipped = [r for r in results if r.skipped]
    passed = sum(r.passed and not r.skipped for r in results)
    body = [
        f"The corpus (`tests/corpus/hostile.yaml`) holds **{len(cases)} cases**. Every one "
        "passes over memory transports in the unit suite (`tests/proxy/test_corpus.py`, one "
        "test per case); here the same file is replayed over real sockets against twistd: "
        f"**{passed} of {len(results) - len(skipped)} pass** ({len(skipped)} agent-sent "
        "frame cases run in memory only: the echo agent here is a compliant library).",
        "**Adding a case** (every fix adds the input that showed its bug): append an entry "
        "to the YAML file, with an `id`, the issue `item`, a line saying `what` it is, the "
        "raw `request` (or a `backend` answer, or WebSocket `frames`) as a double-quoted "
        "YAML string with `\\r\\n` and `\\xNN` escapes, and its `expect`ation; the "
        "file's header lists every field. Both replays pick it up: a new unit test appears "
        "by itself, and this table counts it.",
        table(header, rows),
    ]
    if "before" in runs:
        old = runs["before"]
        body.append(f"Before (`--before`, main's tree): {sum(r.passed for r in old if not r.skipped)}"
                    f" of {sum(not r.skipped for r in old)} passed. What main got wrong:")
        body.append("\n".join(f"- `{r.case.id}` (item {r.case.item}): {r.detail}"
                              for r in old if not r.passed and not r.skipped) or "- nothing")
    if failures:
        body.append("Failing here:\n" + "\n".join(f"- `{r.case.id}`: {r.detail}" for r in failures))
    summary = (f"Hostile corpus: {passed}/{len(results) - len(skipped)} cases pass over real "
               f"sockets ({len(cases)} in the corpus)",)
    return Section("Hostile inputs", "\n\n".join(body), summary, failed=bool(failures))


_KIND_TEXT = {
    "idle": "connect, send nothing",
    "slow_headers": "a request line, then one header line every 5 s",
    "slow_reader": "GET of a 64 MiB stream, read nothing (4 KiB receive buffer)",
    "slow_body": "POST of 10 MiB, one byte every 5 s",
    "stalled_body": "POST of 10 MiB, one byte, then nothing",
}


def availability_part(bench: Bench, options: Options, before: Path | None) -> Section:
    runs: list[tuple[str, Outcome]] = []
    plan = [(kind, options.addresses) for kind in _KIND_TEXT] + [("slow_reader", 1)]
    for label, tree in (("this tree", REPO), *((("before", before),) if before else ())):
        for kind, addresses in (plan if label == "this tree" else plan[:-1]):
            print(f"  {label}: {options.count} {kind} from {addresses} address(es)",
                  file=sys.stderr, flush=True)
            runs.append((label, availability.run_one(
                bench, tree=tree, kind=kind, count=options.count, addresses=addresses,
                hold=options.hold, ramp=options.ramp)))
    rows = []
    for label, o in runs:
        held = o.held
        statuses = ", ".join(f"{n}x {s}" for s, n in sorted(held.statuses.items())) or "-"
        closed = (f"{held.closed} ({min(held.closed_after):.0f}-{max(held.closed_after):.0f} s)"
                  if held.closed else "0")
        rows.append([
            label, o.kind.replace("_", " "), f"{o.count} / {o.addresses}",
            f"{held.opened}", statuses, closed,
            f"{o.peak_mib:.0f} MiB" + ("" if o.survived else " **killed**")
            + (f" ({o.oom_kills} OOM kill)" if o.oom_kills else ""),
            f"{(o.peak_mib - o.baseline_mib) * 1024 / max(1, held.opened):.1f}",
            str(o.backend_most_open),
            f"{o.good_requests} / {sum(o.good_errors.values())}",
            _ms(o.p99_ms),
            f"{o.other_requests} / {sum(o.other_errors.values())}",
            _ms(o.other_p99_ms),
        ])
    header = ["tree", "clients", "count / addresses", "opened", "answers they got",
              "closed by the proxy (when)", "peak memory", "KiB each", "backend conns",
              "good client: requests / errors", "p99 ms", "other agent: requests / errors",
              "p99 ms"]
    errors = sorted({f"{e}" for _, o in runs for e in {**o.good_errors, **o.other_errors}})
    body = [
        f"Each row: a fresh orchestrator (this tree's, or `--before`'s) in a memory cgroup of "
        f"**256 MiB** (the stack's `resources.limits.memory`; see below), two always-on agents "
        f"on loopback, **{options.count}** hostile connections of one kind opened over "
        f"{options.ramp:g} s from that many loopback addresses (127.0.1.x) and held for "
        f"{options.hold:g} s, while two well-behaved clients (127.0.0.1) send a small GET on a "
        f"new connection every 50 ms, to the attacked agent and to another one. Defaults "
        f"throughout (`proxy.*` as documented). \"KiB each\": the cgroup's peak growth over "
        f"its idle baseline, per hostile connection opened.",
        "\n".join(f"- **{kind.replace('_', ' ')}**: {text}" for kind, text in _KIND_TEXT.items()),
        table(header, rows),
        ("Errors seen by the well-behaved clients: " + ", ".join(errors)) if errors else
        "The well-behaved clients saw no error.",
        "**The memory limit.** The orchestrator runs in a cgroup of its own "
        "(`bench/reliability/cgroup.py`: a directory under this process's memory cgroup, "
        "`memory.limit_in_bytes` 256 MiB with swap included), not in the stack's container: "
        "on this engine (cgroupfs driver, cgroup v1) the container's limit is exactly such a "
        "directory, so the accounting (page cache and kernel memory included) is the same, "
        "while this tree runs as it is, without an image rebuilt under a shared tag.",
    ]
    survived = all(o.survived for label, o in runs if label == "this tree")
    summary = (f"Slow and idle clients: {options.count} of each kind under 256 MiB, "
               f"{'survived every run' if survived else 'KILLED in a run'} "
               f"(peak {max(o.peak_mib for label, o in runs if label == 'this tree'):.0f} MiB)",)
    return Section("Slow, idle and stalled clients under the stack's memory limit",
                   "\n\n".join(body), summary, failed=not survived)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def signals_part(bench: Bench, options: Options, before: Path | None) -> Section:
    term = signals.sigterm_with_websockets(bench, tree=REPO, sockets=options.websockets)
    hup = signals.sighup_under_load(bench, tree=REPO)
    closes = ", ".join(f"{n}x {code}" for code, n in sorted(term.closes.items()))
    body = [
        f"**SIGTERM with {term.sockets:,} open WebSockets** (relayed to an echo agent, "
        f"`shutdown.drain_timeout` {term.drain_timeout:g} s): {term.opened:,} opened; the "
        f"closes they got: {closes}; the last close came "
        f"{term.last_close_after:.2f} s after the signal, and the process ended after "
        f"{term.exited_after:.2f} s." if term.exited_after is not None else
        f"**SIGTERM with {term.sockets:,} WebSockets**: closes {closes}; the process did NOT end.",
        f"**SIGHUP under a steady request loop**: {hup.reloads} reloads (each one a changed "
        f"`proxy.retry_after`, every 2 s) during {hup.requests:,} requests (a new connection "
        f"every 20 ms): **{sum(hup.errors.values())} errors**"
        + (f" ({hup.errors})" if hup.errors else "") + f", p99 {hup.p99_ms:.0f} ms.",
    ]
    ok = (term.closes.get("1001", 0) == term.sockets and term.exited_after is not None
          and term.last_close_after <= term.drain_timeout and not hup.errors)
    summary = (f"SIGTERM: {term.closes.get('1001', 0)}/{term.sockets} WebSockets got 1001 in "
               f"{term.last_close_after:.2f} s; SIGHUP x{hup.reloads}: "
               f"{sum(hup.errors.values())} errors in {hup.requests} requests",)
    return Section("Signals", "\n\n".join(body), summary, failed=not ok)


def swarm_part(bench: Bench, options: Options, restart_dockerd: bool) -> Section:
    from bench.reliability import swarm

    client = swarm.engine()
    swarm.slow_image(client)
    killed = swarm.task_killed_mid_request(bench, client, tree=REPO)
    wakes = [swarm.wake_with_engine_gone(bench, client, tree=REPO, real_restart=False)]
    if restart_dockerd:
        wakes.append(swarm.wake_with_engine_gone(bench, client, tree=REPO, real_restart=True))
    orchestrator = swarm.orchestrator_killed(bench, client)
    body = [
        "**A task killed mid-request** (an always-on agent as a Swarm service, busybox "
        "httpd, a request to a CGI that answers after 5 s; its container killed with "
        f"SIGKILL 1 s in): the client got **{killed.status}** with "
        f"`{_json(killed.body)}`. Swarm's new task ran "
        f"{_s(killed.task_back_after)} after the kill; the first request to succeed came "
        f"{_s(killed.first_success_after)} after it ({killed.failures_after} requests failed "
        f"meanwhile: {killed.failure_statuses}).",
    ]
    for wake in wakes:
        body.append(
            f"**{wake.how} mid-wake** for {wake.cut_seconds:g} s, right after the scale-up "
            f"was asked (an on-demand agent, `docker.timeout` 5 s): the wake ended "
            f"**{wake.final_state}** ({wake.reason!r}) {_s(wake.settled_after)} after the "
            f"engine went away; `/api/health` answered every time (slowest "
            f"{wake.slowest_health_answer * 1000:.0f} ms, {wake.unanswered_health} "
            f"unanswered); a request was served again {_s(wake.served_after)} after "
            f"(status {wake.next_request}). {wake.restored}")
    if not restart_dockerd:
        body.append("**dockerd restarted mid-wake**: not run (it needs `--restart-dockerd`: "
                    "it stops every container on the shared engine). The socket-proxy run "
                    "above takes the engine's API away the same way the orchestrator sees it.")
    body.append(
        "**The orchestrator killed with SIGKILL and restarted by Swarm** (its own image "
        "from this tree as a service, host network, 256 MiB limit, restart policy `any` "
        "with a 1 s delay; an on-demand agent awake; a request every 50 ms, 2 s timeout): "
        f"{orchestrator.failed} of {orchestrator.requests} requests failed, over "
        f"{_s(orchestrator.outage_seconds)}; Swarm's new task was running "
        f"{_s(orchestrator.restarted_after)} after the kill; the agent was "
        f"**{orchestrator.agent_state_after}** again afterwards and was "
        f"{'woken again (its state was lost)' if orchestrator.woken_again else 'not woken again: its state came back from Swarm'}.")
    summary = (f"Swarm: task killed -> {killed.status}, served again after "
               f"{_s(killed.first_success_after)}; orchestrator SIGKILL -> "
               f"{orchestrator.failed}/{orchestrator.requests} requests failed",)
    return Section("The real Swarm failing", "\n\n".join(body), summary)


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def _json(value) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value


def fuzz_part(bench: Bench, options: Options) -> Section:
    try:
        import atheris  # noqa: F401
        installed = True
    except ImportError:
        installed = False
    rows, crashed = [], False
    if installed:
        artifacts = bench.out / "fuzz"
        artifacts.mkdir(parents=True, exist_ok=True)
        for target in fuzz.TARGETS:
            result = fuzz.run(target, options.fuzz_seconds, str(artifacts))
            crashed |= bool(result["crash"] or result["error"])
            rows.append([f"`{target}`", f"{result['runs']:,}" if result["runs"] else "-",
                         f"{result['seconds']}" if result["seconds"] else "-",
                         result["crash"] or (result["error"] or "none")[:80]])
    body = [
        "Hypothesis (in the unit suite, derandomized: the `ci` profile in `tests/__init__.py`, "
        "200 examples each): the front door over any bytes in any pieces "
        "(`tests/proxy/test_frontdoor.py`), request targets (`tests/http/test_targets.py`), "
        "backend heads (`tests/http/test_connection.py`), Host values "
        "(`tests/http/test_headers.py`), the UTF-8 tail of relayed text frames "
        "(`tests/relay/test_handshake.py`), and the configuration "
        "(`tests/config/`).",
    ]
    if installed:
        body += [f"atheris (coverage-guided, `bench/reliability/fuzz.py`), "
                 f"{options.fuzz_seconds:g} s per target, each in its own process:",
                 table(["target", "runs", "seconds", "crash"], rows)]
    else:
        body.append("atheris did not install here: no coverage-guided run.")
    return Section("Fuzzing", "\n\n".join(body),
                   (f"Fuzzing: atheris {'found a crash' if crashed else 'found nothing'}"
                    if installed else "Fuzzing: atheris not installed",), failed=crashed)


# The report -------------------------------------------------------------------------


def render(started: str, seconds: float, argv: str, facts: dict, sections: list[Section]) -> str:
    parts = [
        "# Reliability",
        f"Generated by `bench/reliability/run` on {started} in {seconds:.0f} s (`{argv}`). "
        "Do not edit by hand: rerun the command, which rewrites this file "
        "(`bench/reliability/run --help`). The parts are `bench/reliability/`; the hostile "
        "corpus is `tests/corpus/hostile.yaml`.",
        "## Summary",
        "\n".join(f"- {line}" for section in sections for line in section.summary),
    ]
    for section in sections:
        parts += [f"## {section.title}", section.body]
    parts += ["## Machine", table(["", ""], [[k, v] for k, v in facts.items()])]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    options = QUICK if arguments.quick else Options()
    wanted = set((arguments.only or ",".join(PARTS)).split(","))
    unknown = wanted - set(PARTS)
    if unknown:
        raise SystemExit(f"bench/reliability/run: unknown part(s): {', '.join(sorted(unknown))}")
    output = arguments.output or (OUT / "reliability-only.md" if arguments.only or arguments.quick
                                  else DOCS)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    OUT.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-reliability-"))
    sections = []
    try:
        with Bench(tmp, OUT) as bench:
            facts = machine_facts()
            for part in PARTS:
                if part not in wanted:
                    continue
                print(f"reliability: {part} ...", file=sys.stderr, flush=True)
                bench.suite = part
                try:
                    if part == "corpus":
                        section = corpus_part(bench, options, arguments.before)
                    elif part == "availability":
                        section = availability_part(bench, options, arguments.before)
                    elif part == "signals":
                        section = signals_part(bench, options, arguments.before)
                    elif part == "swarm":
                        section = swarm_part(bench, options, arguments.restart_dockerd)
                    else:
                        section = fuzz_part(bench, options)
                except (BenchError, Exception) as error:  # one part failing keeps the others
                    traceback.print_exc()
                    section = Section(part, f"**Failed:** {type(error).__name__}: {error}",
                                      (f"{part}: FAILED ({error})",), failed=True)
                sections.append(section)
                for line in section.summary:
                    print(f"  {line}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("reliability: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(started.strftime("%Y-%m-%d %H:%M UTC"), time.monotonic() - clock,
                  shlex.join(["bench/reliability/run", *argv]), facts, sections)
    output.write_text(text)
    print(f"reliability: wrote {output}", file=sys.stderr)
    return 1 if any(section.failed for section in sections) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
