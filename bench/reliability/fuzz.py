"""
Coverage-guided fuzzing of the parsers with atheris, bounded in time: the front door
(request bytes into a channel over a memory transport), the backend client's head
parser, the request-target splitter, the configuration reader. Each target runs in its
own process (atheris owns the process), for a fixed number of seconds.

    python -m bench.reliability.fuzz TARGET SECONDS [ARTIFACT_DIR]
"""

from __future__ import annotations

import sys

TARGETS = ("front_door", "response_head", "request_target", "config")


def _front_door():
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import MemoryReactorClock
    from twisted.python.failure import Failure

    from orchestrator.config.model import ProxyConfig
    from orchestrator.proxy.frontdoor import FrontDoorSite
    from orchestrator.proxy.root import ProxyResource
    from tests.helpers import connect_client, make_agent, routes_to

    fixture = make_agent(replicas=1)
    config = ProxyConfig()
    site = FrontDoorSite(ProxyResource(routes_to(fixture.agent), config, clock=fixture.clock),
                         config, reactor=fixture.clock)
    clock: MemoryReactorClock = fixture.clock

    def one(data: bytes) -> None:
        channel, transport = connect_client(site)
        channel.dataReceived(data)
        clock.advance(31)  # every deadline fires
        channel.connectionLost(Failure(ConnectionDone()))
        del clock.tcpClients[:], clock.connectors[:]  # backend connections never made
        answer = transport.value()
        # Whatever came in, what goes out is HTTP (or nothing): never a traceback.
        if answer and not answer.startswith(b"HTTP/1.1 "):
            raise AssertionError(f"not HTTP: {answer[:80]!r}")
        if b"Traceback" in answer:
            raise AssertionError("a traceback in an answer")

    return one


def _response_head():
    from orchestrator.http.connection import parse_head
    from orchestrator.http.response import BadResponse

    def one(data: bytes) -> None:
        try:
            _, code, phrase, headers, _, _, _ = parse_head(data)
        except BadResponse:
            return
        assert 100 <= code <= 599
        for text in [phrase, *(v for _, vs in headers.getAllRawHeaders() for v in vs)]:
            assert not any(c < 32 and c != 9 or c == 127 for c in text), text

    return one


def _request_target():
    from orchestrator.http.headers import is_valid_host
    from orchestrator.http.targets import BadTarget, split_target

    def one(data: bytes) -> None:
        try:
            authority, path = split_target(data)
        except BadTarget:
            return
        assert path.startswith(b"/") and path.isascii()
        assert authority is None or is_valid_host(authority)

    return one


def _config():
    from orchestrator.config.readers import ConfigError
    from orchestrator.config.schema import parse_config

    def one(data: bytes) -> None:
        try:
            parse_config(data.decode("utf-8", "replace"), "fuzz.yaml")
        except ConfigError:
            pass

    return one


def main(target: str, seconds: float, artifacts: str) -> None:
    """
    Fuzz C{target} for C{seconds} (libFuzzer's own bound); a crashing input is written
    under C{artifacts}. libFuzzer prints "Done N runs in S second(s)" when time is up.
    """
    import atheris

    with atheris.instrument_imports():
        one = {"front_door": _front_door, "response_head": _response_head,
               "request_target": _request_target, "config": _config}[target]()
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", "-rss_limit_mb=1024",
                   "-max_len=4096", f"-artifact_prefix={artifacts}/"], one)
    atheris.Fuzz()


def run(target: str, seconds: float, artifacts: str, python: str = sys.executable) -> dict:
    """
    One bounded run of C{target} in a process of its own: runs, seconds, and the
    crashing input's file if there was one.
    """
    import re
    import subprocess

    done = subprocess.run([python, "-m", "bench.reliability.fuzz", target, str(seconds), artifacts],
                          capture_output=True, text=True, timeout=seconds + 120)
    output = done.stdout + done.stderr
    finished = re.search(r"Done (\d+) runs in (\d+) second", output)
    crash = re.search(r"Test unit written to (\S+)", output)
    return {"target": target, "runs": int(finished[1]) if finished else None,
            "seconds": int(finished[2]) if finished else None,
            "crash": crash[1] if crash else None,
            "error": None if finished or crash else output[-600:]}


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ".")
