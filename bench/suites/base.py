"""
What a suite is: something that measures, given the L{Bench} and the run's L{Options},
and returns a L{Section} of docs/benchmarks.md. The run calls the suites of
L{bench.suites.SUITES} in order; a suite that fails gets a section saying why, and the
others still run.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from bench.harness import Bench


@attrs.frozen
class Options:
    """
    The run's knobs, shared by all suites (C{bench/run --help}).

    @ivar duration: seconds of each measured wrk run.
    @ivar connections: wrk's concurrent keep-alive connections.
    @ivar rounds: measured runs per target; the report gives the median and the range.
    @ivar single_duration: seconds of the one-connection latency runs.
    @ivar transfer_bytes: size of the streamed upload and download.
    @ivar profile_seconds: how long py-spy samples the orchestrator under load.
    """

    duration: float = 10.0
    connections: int = 50
    rounds: int = 3
    warmup: float = 2.0
    single_duration: float = 5.0
    transfer_bytes: int = 1024 ** 3
    profile_seconds: float = 10.0


@attrs.frozen
class Section:
    """
    A suite's part of the report: a markdown C{body} under C{title}, and the few
    C{summary} lines that also go to the top of the report and to the terminal.
    """

    title: str
    body: str
    summary: tuple[str, ...] = ()
    failed: bool = False


class Suite(Protocol):
    """
    One kind of measurement. C{name} selects it on the command line (C{--only http}).
    """

    name: str
    title: str

    def run(self, bench: Bench, options: Options) -> Section:
        """
        Measure (starting servers inside C{bench.scope()}) and describe the results.
        Raise L{bench.harness.BenchError} when a measurement cannot be made.
        """


def table(headers: list[str], rows: list[list[str]]) -> str:
    """
    A markdown table; numeric-looking columns are right-aligned.
    """

    def numeric(column: int) -> bool:
        cells = [row[column] for row in rows if row[column] not in ("", "-")]
        return bool(cells) and all(
            cell.replace(".", "").replace(",", "").replace("%", "").replace("x", "")
            .replace("+", "").replace("-", "").replace(" ", "").isdigit()
            for cell in cells)

    align = ["---:" if numeric(i) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float, digits: int = 0) -> str:
    """
    C{12,345} or C{1.23}: thousands separated, C{digits} decimals.
    """
    return f"{value:,.{digits}f}"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"
