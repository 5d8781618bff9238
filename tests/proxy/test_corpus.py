"""
The hostile corpus (tests/corpus/hostile.yaml) replayed over memory transports: every
case, against a ready agent, gets what the corpus says. bench/reliability replays the
same file over real sockets.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.corpus import Case, load_corpus
from tests.proxy.harness import ProxyHarness, RawBackend
from tests.relay.harness import CLOSE, RelayHarness

HOST = "alpha.example.com"
CASES = load_corpus()


def status_of(raw: bytes) -> int | None:
    """
    The status of an HTTP/1.1 status line (every answer is one, whatever the request's
    version), else C{None}.
    """
    line = raw.split(b"\r\n", 1)[0].split(b" ")
    return int(line[1]) if line[0] == b"HTTP/1.1" and len(line) > 1 and line[1].isdigit() else None


class CorpusTests(SynchronousTestCase):
    def test_the_corpus_has_every_class_of_the_issue(self):
        self.assertLessEqual({"3", "6", "7", "8", "9", "10", "12", "13"},
                             {case.item for case in CASES})

    def replay(self, case: Case) -> None:
        if case.frames is not None:
            self.replay_frames(case)
        else:
            self.replay_request(case)
        self.assertEqual(self.flushLoggedErrors(), [])

    def replay_request(self, case: Case) -> None:
        backend = RawBackend(case.backend) if case.backend is not None else None
        harness = ProxyHarness(replicas=1, backend=backend)
        _, transport = harness.send(case.request_for(HOST))
        expect, answer = case.expect, transport.value()
        self.assertEqual(status_of(answer), expect.status, answer[:200])
        for text in expect.lacks:
            self.assertNotIn(text, answer)
        if expect.closes:
            self.assertTrue(transport.disconnecting)
        if expect.backend == "none":
            self.assertEqual((harness.backend.requests, harness.pumps), ([], []))
        if expect.backend == "reached" or expect.backend_headers or expect.backend_lacks:
            (seen,) = harness.backend.requests
            for name, value in case.backend_headers(HOST).items():
                self.assertEqual(seen.headers.getRawHeaders(name.encode()), [value.encode()], name)
            for name in expect.backend_lacks:
                self.assertFalse(seen.headers.hasHeader(name.encode()), name)
            if expect.backend_target is not None:
                self.assertEqual(seen.uri, expect.backend_target.encode())

    def replay_frames(self, case: Case) -> None:
        client, backend = RelayHarness().open()
        sender, receiver = (client, backend) if case.sender == "client" else (backend, client)
        sender.send(case.frames)
        to_client, to_agent = client.frames(), backend.frames()
        self.assertEqual([f.close[0] for f in to_client if f.opcode == CLOSE][:1],
                         [case.expect.close])
        self.assertEqual([f.close[0] for f in to_agent if f.opcode == CLOSE][:1],
                         [case.expect.agent_close])
        # The close is sent, not lost to an abort of the connection it was written to.
        self.assertFalse(sender.transport.disconnected)
        # Nothing of the invalid input reaches the other peer.
        passed = to_agent if case.sender == "client" else to_client
        self.assertEqual([f.opcode for f in passed if f.opcode != CLOSE], [])


def _case_test(case: Case):
    def test(self):
        self.replay(case)

    test.__name__ = "test_" + case.id.replace("-", "_").replace(".", "_")
    test.__doc__ = f"{case.what} (item {case.item})"
    return test


for _case in CASES:
    setattr(CorpusTests, _case_test(_case).__name__, _case_test(_case))
