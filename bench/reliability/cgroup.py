"""
A memory cgroup for the orchestrator under test, with the stack's limit (256 MiB): a
directory of our own under this process's memory cgroup, removed afterwards.

Why a cgroup and not the stack's container: on this engine (cgroupfs driver, cgroup v1)
a service's C{resources.limits.memory} is exactly such a directory's
C{memory.limit_in_bytes} (swap included, C{memsw}), so the accounting is the
container's, while the orchestrator runs from this tree without an image rebuilt under
a shared tag. cgroup v2 (C{memory.max}) is used where it is mounted instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """
    A memory cgroup with C{limit} bytes, for processes started with L{wrap}.
    """

    def __init__(self, name: str, limit: int) -> None:
        self.limit = limit
        self.v2 = (V2 / "cgroup.controllers").exists()
        if self.v2:
            own = Path(open("/proc/self/cgroup").read().strip().split("::", 1)[1].lstrip("/"))
            self.path = V2 / own / name
        else:
            own = next(line.split(":", 2)[2].strip() for line in open("/proc/self/cgroup")
                       if line.split(":")[1] == "memory")
            self.path = V1 / own.lstrip("/") / name

    def __enter__(self) -> MemoryCgroup:
        self.path.mkdir(exist_ok=True)
        if self.v2:
            (self.path / "memory.max").write_text(str(self.limit))
            (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
            with contextlib.suppress(OSError):  # no swap accounting on some kernels
                (self.path / "memory.memsw.limit_in_bytes").write_text(str(self.limit))
            (self.path / "memory.max_usage_in_bytes").write_text("0")
        return self

    def __exit__(self, *exc_info) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # its processes are still exiting

    def wrap(self, argv: list[str]) -> list[str]:
        """
        C{argv}, run inside this cgroup (the shell joins it, then execs).
        """
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "in-cgroup", *argv]

    def usage(self) -> int:
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        return int((self.path / name).read_text())

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / name).read_text())
        return 0

    def stat(self) -> dict[str, int]:
        """
        The cgroup's memory.stat (v1: rss, cache, ...; v2: anon, file, sock, ...), with
        the kernel's own memory (v1: memory.kmem.usage_in_bytes) as C{kmem}.
        """
        values = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                values[key] = int(value)
        if not self.v2:
            with contextlib.suppress(OSError, ValueError):
                values["kmem"] = int((self.path / "memory.kmem.usage_in_bytes").read_text())
        return values

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0


def rss_kib(pid: int) -> int:
    """
    A process's resident set, in KiB (0 once it is gone).
    """
    with contextlib.suppress(OSError):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_files(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0
