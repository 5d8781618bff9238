"""
Log lines a client can repeat, let through once a minute per kind.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.http.throttle import QuietDebug, ThrottledLog


class ThrottledLogTests(SynchronousTestCase):
    def setUp(self):
        publisher = LogPublisher()
        self.events = EventLoggingObserver.createWithCleanup(self, publisher)
        self.clock = Clock()
        self.log = ThrottledLog(Logger(observer=publisher), self.clock, interval=60)

    def test_repeats_within_the_interval_are_held_back(self):
        for _ in range(10):
            self.log.info("refused {code}", code=403)
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.events[0]["code"], 403)

    def test_the_next_one_says_how_many_were_held_back(self):
        for _ in range(10):
            self.log.warn("refused")
        self.clock.advance(60)
        self.log.warn("refused")
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["suppressed"], 9)
        self.assertIn("{suppressed} more like it", self.events[1]["log_format"])

    def test_kinds_are_apart(self):
        self.log.info("one")
        self.log.info("two")
        self.log.info("one", throttle_key="alpha")
        self.log.info("one", throttle_key="beta")
        self.assertEqual(len(self.events), 4)

    def test_a_failure_is_logged_with_it(self):
        try:
            raise ZeroDivisionError()
        except ZeroDivisionError:
            self.log.failure("rendering failed")
        self.events[0]["log_failure"].trap(ZeroDivisionError)

    def test_kinds_quiet_for_an_interval_are_forgotten_when_there_are_many(self):
        for index in range(1024):
            self.log.info(f"kind {index}")
        self.clock.advance(60)
        self.log.info("one more")
        self.assertEqual(len(self.log._last), 1)


class QuietDebugTests(SynchronousTestCase):
    def test_debug_and_trace_are_dropped(self):
        publisher = LogPublisher()
        events = EventLoggingObserver.createWithCleanup(self, publisher)
        log = QuietDebug(Logger(observer=publisher), Clock())
        log.debug("frame in")
        log.trace("bytes in")
        log.warn("failing WebSocket connection")
        self.assertEqual([e["log_format"] for e in events], ["failing WebSocket connection"])
