"""
bench/run: measure the orchestrator against nginx on loopback, with pinned CPUs, and
write docs/benchmarks.md. The suites (bench/suites/__init__.py) run in order; each starts
what it needs and stops it. A full run takes about 13 minutes on two cores, most of it
on the real Swarm.

    bench/run                    # everything; rewrites docs/benchmarks.md
    bench/run --quick            # short runs, to bench/out/benchmarks-quick.md
    bench/run --only http,profile   # some suites, to bench/out/benchmarks-only.md

The orchestrator runs with PYTHONPATH=<repository>:$PYTHONPATH, so an experiment can be
measured without touching orchestrator/: put a sitecustomize.py in DIR and run
PYTHONPATH=DIR bench/run --only http --output /tmp/experiment.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import attrs

from bench.harness import PROXY_CPU, REPO, Bench, BenchError, machine_facts
from bench.report import Run, render
from bench.suites import SUITES, Options, Section

DOCS = REPO / "docs" / "benchmarks.md"
OUT = REPO / "bench" / "out"
QUICK = Options(duration=2, rounds=1, warmup=1, single_duration=2,
                transfer_bytes=256 * 1024 ** 2, profile_seconds=3)
REQUIRED_TOOLS = ["nginx", "wrk", "curl", "taskset", "truncate"]


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ", ".join(suite.name for suite in SUITES)
    parser.add_argument("--only", help=f"comma-separated suites to run (of: {names}); "
                        f"writes bench/out/ unless --output")
    parser.add_argument("--quick", action="store_true",
                        help="short runs to try the bench; writes bench/out/ unless --output")
    parser.add_argument("--duration", type=float, help="seconds per measured wrk run (10)")
    parser.add_argument("--connections", type=int, help="wrk connections (50)")
    parser.add_argument("--rounds", type=int, help="measured wrk runs per target (3)")
    parser.add_argument("--output", type=Path, help=f"the report (default {DOCS})")
    return parser.parse_args(argv)


def options_from(arguments: argparse.Namespace) -> Options:
    options = QUICK if arguments.quick else Options()
    changes = {name: getattr(arguments, name) for name in ("duration", "connections", "rounds")
               if getattr(arguments, name) is not None}
    return attrs.evolve(options, **changes)


def selected_suites(only: str | None):
    if not only:
        return list(SUITES)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = wanted - {suite.name for suite in SUITES}
    if unknown:
        raise SystemExit(f"bench/run: unknown suite(s): {', '.join(sorted(unknown))}")
    return [suite for suite in SUITES if suite.name in wanted]


def preflight() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench/run: missing {', '.join(missing)} "
                         f"(apt-get install nginx-light wrk curl util-linux)")
    if PROXY_CPU not in os.sched_getaffinity(0):
        raise SystemExit(f"bench/run: needs CPUs 0 and {PROXY_CPU} (this machine: "
                         f"{sorted(os.sched_getaffinity(0))})")


def failed(suite, message: str) -> Section:
    first_line = (message.splitlines() or ["?"])[0]
    return Section(suite.title, f"**Failed:** {message}",
                   (f"{suite.title}: FAILED ({first_line})",), failed=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    options = options_from(arguments)
    suites = selected_suites(arguments.only)
    # docs/benchmarks.md is only ever a complete, full-length run.
    output = arguments.output or (OUT / "benchmarks-quick.md" if arguments.quick else
                                  OUT / "benchmarks-only.md" if arguments.only else DOCS)
    preflight()
    # SIGTERM unwinds like Ctrl-C, through every finally that stops a process; SIGINT is
    # taken even when a non-interactive shell started the bench in the background with it
    # ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    OUT.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    sections: list[Section] = []
    try:
        with Bench(tmp, OUT) as bench:
            facts = machine_facts()
            for suite in suites:
                bench.suite = suite.name
                print(f"bench: {suite.name} ...", file=sys.stderr, flush=True)
                suite_clock = time.monotonic()
                try:
                    section = suite.run(bench, options)
                except BenchError as error:
                    section = failed(suite, str(error))
                except Exception as error:  # a bug in one suite must not lose the others
                    traceback.print_exc()
                    section = failed(suite, f"{type(error).__name__}: {error} (a bug in the "
                                     f"suite; traceback on the bench's stderr)")
                sections.append(section)
                for line in section.summary:
                    print(f"  {line}", file=sys.stderr)
                print(f"  ({time.monotonic() - suite_clock:.0f} s)", file=sys.stderr)
            commands, configs = bench.commands, bench.configs
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped, no report written",
              file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run = Run(
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.monotonic() - clock,
        argv=shlex.join(["bench/run", *argv]),
        facts=facts,
        options=options,
        sections=sections,
        commands=commands,
        configs=configs,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(run))
    print(f"bench: wrote {output} ({run.seconds:.0f} s)", file=sys.stderr)
    return 1 if any(section.failed for section in sections) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
