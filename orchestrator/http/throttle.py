"""
Log lines a client can make happen again and again (a malformed request, a refused
handshake, an idle connection timing out, a backend failing mid-response), let through
at most once a minute per kind, with the count of those held back: the log stays
readable and bounded whatever clients do.
"""

from __future__ import annotations

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

#: Seconds during which one kind of event is logged once.
INTERVAL = 60.0


#: Kinds remembered at most; beyond, those quiet for an interval are forgotten.
_MOST_KINDS = 1024


class ThrottledLog:
    """
    A L{Logger} (the same methods) that emits one event per kind per C{interval} and
    counts the others; the next event of that kind says how many were held back
    (C{suppressed}). The kind is the format string, or C{throttle_key} when given (an
    agent's name, so one agent's trouble does not hide another's).
    """

    def __init__(self, logger: Logger, clock, interval: float = INTERVAL) -> None:
        self._logger = logger
        self._clock = clock
        self._interval = interval
        self._last: dict[object, float] = {}
        self._held_back: dict[object, int] = {}

    def emit(self, level: LogLevel, format: str | None = None, *, throttle_key=None,
             **fields) -> None:
        kind = (format, throttle_key)
        now = self._clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held_back[kind] = self._held_back.get(kind, 0) + 1
            return
        if len(self._last) >= _MOST_KINDS:
            self._forget_quiet(now)
        self._last[kind] = now
        held_back = self._held_back.pop(kind, 0)
        if held_back:
            fields["suppressed"] = held_back
            format = (format or "") + " ({suppressed} more like it in the last minute not logged)"
        self._logger.emit(level, format, **fields)

    def _forget_quiet(self, now: float) -> None:
        for kind, last in list(self._last.items()):
            if now - last >= self._interval:
                del self._last[kind]
                self._held_back.pop(kind, None)

    def debug(self, format: str | None = None, **fields) -> None:
        self.emit(LogLevel.debug, format, **fields)

    def info(self, format: str | None = None, **fields) -> None:
        self.emit(LogLevel.info, format, **fields)

    def warn(self, format: str | None = None, **fields) -> None:
        self.emit(LogLevel.warn, format, **fields)

    def error(self, format: str | None = None, **fields) -> None:
        self.emit(LogLevel.error, format, **fields)

    def critical(self, format: str | None = None, **fields) -> None:
        self.emit(LogLevel.critical, format, **fields)

    def failure(self, format: str, failure: Failure | None = None,
                level: LogLevel = LogLevel.critical, **fields) -> None:
        if failure is None:
            failure = Failure()
        self.emit(level, format, log_failure=failure, **fields)


class QuietDebug(ThrottledLog):
    """
    For a library's logger (Autobahn's, on the relay's legs): its debug and trace
    events are dropped, as its own logger does by default, the rest throttled.
    """

    def debug(self, format: str | None = None, **fields) -> None:
        pass

    def trace(self, format: str | None = None, **fields) -> None:
        pass
