"""
Streaming: a large download and a large upload directly, through nginx and through the
orchestrator, with the orchestrator's resident memory before, at its peak and after.
A proxy that streams with flow control stays flat whatever the body size.
"""

from __future__ import annotations

import json

import attrs

from bench.harness import LOAD_CPU, PROXY_CPU, Bench, BenchAgent, BenchError, Server
from bench.measure import (
    RssSampler,
    Transfer,
    curl_transfer,
    process_cpu_seconds,
    reset_peak_rss,
    status_kib,
)
from bench.suites.base import Options, Section, mib, number, table

UPLOAD_HOST = "upload.localhost"
#: Peak RSS growth during a transfer above which memory does not count as flat.
FLAT_LIMIT_KIB = 32 * 1024


@attrs.frozen
class Memory:
    """
    The orchestrator's memory around one transfer (KiB) and the CPU time it spent.
    """

    before: int
    peak: int
    sampled_peak: int
    after: int
    cpu_seconds: float

    @property
    def growth(self) -> int:
        return self.peak - self.before


class StreamingSuite:
    """
    One curl transfer per path and direction (curl on CPU 0, the proxy on CPU 1, the
    backends on CPU 0). Downloads come from nginx (a sparse file, sent with sendfile);
    uploads go to L{bench.sink}, which answers only after counting the whole body.
    """

    name = "streaming"
    title = "Streaming memory"

    def run(self, bench: Bench, options: Options) -> Section:
        size = options.transfer_bytes
        big = bench.data / "big.bin"
        bench.run(["truncate", "-s", str(size), str(big)], cpu=None, timeout=10,
                  purpose="the file to download and upload (sparse)")
        rows, flat = [], True
        with bench.scope():
            backend = bench.nginx("stream-backend", "backend.conf", cpu=LOAD_CPU)
            sink = bench.sink("sink", cpu=LOAD_CPU)
            peer = bench.nginx("stream-nginx-proxy", "proxy.conf", cpu=PROXY_CPU,
                               backend_port=backend.port, upload_port=sink.port)
            orchestrator = bench.orchestrator(
                "stream-orchestrator", backend_port=backend.port,
                agents=(BenchAgent("upload", UPLOAD_HOST, sink.port),))
            paths = [("direct", backend, sink), ("nginx proxy", peer, peer),
                     ("orchestrator", orchestrator, orchestrator)]
            for name, download_server, upload_server in paths:
                measured = orchestrator if name == "orchestrator" else None
                for direction in ("download", "upload"):
                    if direction == "download":
                        transfer, memory = self._download(bench, name, download_server,
                                                          measured, size)
                    else:
                        transfer, memory = self._upload(bench, name, upload_server, measured,
                                                        big, size)
                    rows.append(self._row(name, direction, transfer, memory))
                    if memory is not None and memory.growth > FLAT_LIMIT_KIB:
                        flat = False
        return self._section(rows, flat, options)

    def _download(self, bench: Bench, name: str, server: Server, measured: Server | None,
                  size: int) -> tuple[Transfer, Memory | None]:
        def transfer() -> Transfer:
            return curl_transfer(bench, server.url("/big.bin"), timeout=120,
                                 purpose=f"download via {name}")

        done, memory = self._observed(measured, transfer)
        if done.code != 200 or done.downloaded != size:
            raise BenchError(f"download via {name}: HTTP {done.code}, {done.downloaded} of "
                             f"{size} bytes")
        return done, memory

    def _upload(self, bench: Bench, name: str, server: Server, measured: Server | None,
                big, size: int) -> tuple[Transfer, Memory | None]:
        answer = bench.tmp / "upload-answer.json"

        def transfer() -> Transfer:
            return curl_transfer(bench, server.url("/upload"), upload=big, answer=answer,
                                 host=UPLOAD_HOST, timeout=120, purpose=f"upload via {name}")

        done, memory = self._observed(measured, transfer)
        try:
            received = json.loads(answer.read_text())["received"]
        except (OSError, ValueError, KeyError) as error:
            raise BenchError(f"upload via {name}: HTTP {done.code}, unreadable answer "
                             f"({error})") from error
        if done.code != 200 or received != size:
            raise BenchError(f"upload via {name}: HTTP {done.code}, the sink received "
                             f"{received} of {size} bytes")
        return done, memory

    def _observed(self, measured: Server | None, transfer) -> tuple[Transfer, Memory | None]:
        """
        Run C{transfer}; if C{measured} is given, watch its memory and CPU meanwhile.
        """
        if measured is None:
            return transfer(), None
        pid = measured.process.pid
        before = status_kib(pid, "VmRSS")
        if not reset_peak_rss(pid):
            raise BenchError("cannot reset VmHWM (/proc/<pid>/clear_refs)")
        cpu_before = process_cpu_seconds(pid)
        with RssSampler(pid) as sampler:
            done = transfer()
        memory = Memory(before=before, peak=status_kib(pid, "VmHWM"),
                        sampled_peak=sampler.peak_kib, after=status_kib(pid, "VmRSS"),
                        cpu_seconds=process_cpu_seconds(pid) - cpu_before)
        return done, memory

    def _row(self, name: str, direction: str, transfer: Transfer,
             memory: Memory | None) -> list[str]:
        row = [name, direction, number(transfer.mib_per_second), number(transfer.seconds, 2)]
        if memory is None:
            return row + ["-"] * 5
        return row + [mib(memory.before), mib(memory.peak), mib(memory.sampled_peak),
                      f"{memory.growth / 1024:+.1f} MiB", number(memory.cpu_seconds, 2)]

    def _section(self, rows: list[list[str]], flat: bool, options: Options) -> Section:
        size = f"{options.transfer_bytes / 1024 ** 3:g} GiB"
        orchestrator = {row[1]: row for row in rows if row[0] == "orchestrator"}
        verdict = ("flat" if flat else
                   f"NOT flat (grew more than {FLAT_LIMIT_KIB // 1024} MiB)")
        summary = (
            f"Streaming {size}: orchestrator download {orchestrator['download'][2]} MiB/s, "
            f"upload {orchestrator['upload'][2]} MiB/s; peak RSS growth "
            f"{orchestrator['download'][7]} / {orchestrator['upload'][7]}: memory {verdict}.",
        )
        body = "\n\n".join([
            f"One {size} download (nginx sends a sparse file) and one {size} upload (`curl "
            f"-T`, a PUT with `Content-Length` and `Expect: 100-continue`, to "
            f"`bench/sink.py`, which answers only after reading the whole body and reports "
            f"the byte count; the bench checks it). Directly: curl and the backend share "
            f"CPU 0, so that row is not a ceiling; via a proxy the work is spread over both "
            f"CPUs. For the orchestrator, VmHWM is reset (`echo 5 > /proc/PID/clear_refs`) "
            f"before each transfer and read after it; VmRSS is also sampled every 10 ms "
            f"as a cross-check. nginx streams with `proxy_buffering off` / "
            f"`proxy_request_buffering off` and 64 KiB buffers.",
            table(["Path", "Direction", "MiB/s", "Seconds", "RSS before", "Peak (VmHWM)",
                   "Peak (sampled)", "Peak growth", "Orchestrator CPU s"], rows),
            f"Memory through the orchestrator: **{verdict}**.",
        ])
        return Section(self.title, body, summary, failed=False)

