"""
The hostile corpus: requests (and backend answers, and WebSocket frames) the front door
must handle, each with what must happen. One data file, C{hostile.yaml}, replayed by
C{tests/proxy/test_corpus.py} over memory transports and by C{bench/reliability} over
real sockets. How to add a case: the file's header.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import yaml

CORPUS = Path(__file__).with_name("hostile.yaml")
#: Written in a case's bytes where the agent's host goes; each replay puts its own.
HOST = "$HOST"


def _bytes(text: str | None) -> bytes | None:
    # YAML's double-quoted escapes (\r, \n, \x00-\xff) are code points below 256: one byte
    # each in Latin-1.
    return None if text is None else text.encode("latin-1")


@attrs.frozen
class Expect:
    """
    What must happen: the status the client gets (C{None}: no answer, the connection
    closed), whether the backend is reached, what it sees and must not, what the
    answer must not hold, whether the connection closes; for a WebSocket case, the close
    codes the client and the agent get (C{None}: none).
    """

    status: int | None = None
    backend: str | None = None  # "none": never reached; "reached"
    backend_headers: dict[str, str] = attrs.field(factory=dict)
    backend_lacks: tuple[str, ...] = ()
    backend_target: str | None = None
    lacks: tuple[bytes, ...] = ()
    closes: bool = False
    close: int | None = None
    agent_close: int | None = None


@attrs.frozen
class Case:
    """
    One hostile input: C{request} (raw bytes, with L{HOST}), the backend's raw answer
    (C{backend}, for the cases about what backends send), or WebSocket C{frames} sent
    once a socket is open; the issue item it came from; what must happen.
    """

    id: str
    item: str
    what: str
    expect: Expect
    request: bytes | None = None
    backend: bytes | None = None
    frames: bytes | None = None
    #: Who sends the frames: the client, or the agent (its frames unmasked).
    sender: str = "client"
    #: How many bytes C{$FILL} in the request stands for (an oversized line).
    fill: int = 0

    def request_for(self, host: str) -> bytes:
        return self.request.replace(HOST.encode(), host.encode()).replace(
            b"$FILL", b"a" * self.fill)

    def backend_headers(self, host: str) -> dict[str, str]:
        return {name: value.replace(HOST, host)
                for name, value in self.expect.backend_headers.items()}


def load_corpus(path: str | Path = CORPUS) -> list[Case]:
    """
    The cases of the corpus file at C{path}, in its order; ids are unique.
    """
    cases = []
    for entry in yaml.safe_load(Path(path).read_text(encoding="utf-8")):
        expect = dict(entry.pop("expect"))
        expect["lacks"] = tuple(_bytes(text) for text in expect.get("lacks", ()))
        expect["backend_lacks"] = tuple(expect.get("backend_lacks", ()))
        cases.append(Case(expect=Expect(**expect), request=_bytes(entry.pop("request", None)),
                          backend=_bytes(entry.pop("backend", None)),
                          frames=_bytes(entry.pop("frames", None)), item=str(entry.pop("item")),
                          **entry))
    ids = [case.id for case in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"{path}: case ids used twice: {sorted(duplicates)}")
    return cases
