"""
A client of the admin API, for C{orchestrator-ctl} and scripts: L{IAdminClient}, made
over HTTP by L{HTTPAdminClient} (treq) and in memory by
L{orchestrator.admin.memory.FakeAdminClient}; one contract suite runs against both (the
real one against a real admin listener on loopback).

It imports nothing of the server: what it knows of the admin API is the wire (paths,
status codes, JSON bodies), so the command-line client can be installed and reasoned
about without the orchestrator's internals. Agents and events are the API's JSON
objects, as the server sends them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
import treq
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from zope.interface import Interface, implementer


class AdminClientError(Exception):
    """
    The admin API refused a request, or could not be asked; the message says why in one
    line. C{code} is the HTTP status (0 when there was no answer).
    """

    code = 0

    def __init__(self, message: str, body: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body or {}


class AdminUnreachable(AdminClientError):
    """
    No answer: nothing listens there, the connection broke, or the answer was not JSON.
    """


class Unauthorized(AdminClientError):
    code = 401


class UnknownAgent(AdminClientError):
    code = 404


class Refused(AdminClientError):
    """
    The request cannot be done (409: an always-on agent is not woken or put to sleep).
    """

    code = 409


class AgentDegraded(AdminClientError):
    """
    A wake or sleep waited for ended with the agent degraded (503); C{body} is its view.
    """

    code = 503


_ERRORS = {401: Unauthorized, 404: UnknownAgent, 409: Refused, 503: AgentDegraded}


class IAdminClient(Interface):
    """
    The admin API, as a caller sees it. Every method returns a Deferred, failing with an
    L{AdminClientError}.
    """

    def agents():  # type: ignore[misc]
        """
        Fire with C{{"agents": [view, ...], "last_event_id": ..., "time": ...}}.
        """

    def agent(name: str):  # type: ignore[misc]
        """
        Fire with one agent's view.
        """

    def wake(name: str, wait: float | None = None):  # type: ignore[misc]
        """
        Wake agent C{name}; fire with its view (C{ready}, or C{starting} if it is not yet,
        even after C{wait} seconds). Fails with L{AgentDegraded} if a wake waited for
        failed, L{Refused} for an always-on agent.
        """

    def sleep(name: str, wait: float | None = None):  # type: ignore[misc]
        """
        Put agent C{name} to sleep; fire with its view (C{sleeping}, or as it is while it
        drains).
        """

    def events():  # type: ignore[misc]
        """
        Fire with C{{"events": [event, ...], "last_event_id": ...}}: the buffered events.
        """

    def follow(deliver: Callable[[dict], None], last_event_id: str | None = None):  # type: ignore[misc]
        """
        Call C{deliver} with each event after C{last_event_id} (new ones only if
        C{None}); a stream control message (C{gap}, C{dropped}) is delivered as
        C{{"event": "stream.gap", ...}}. Fire with a L{Following} once the stream is open.
        """

    def config():  # type: ignore[misc]
        """
        Fire with the running configuration, secrets redacted.
        """


@attrs.define
class Following:
    """
    An open event stream: C{ended} fires when it ends (the server closed it, or
    L{stop}); C{last_event_id} is the id of the last event delivered.
    """

    ended: Deferred
    stop: Callable[[], None]
    last_event_id: str | None = None


@attrs.frozen
class SSEMessage:
    """
    One message of a C{text/event-stream}.
    """

    data: str
    event: str | None = None
    id: str | None = None


class SSEParser:
    """
    The C{text/event-stream} format, read incrementally: bytes in, whole messages out,
    however the bytes are cut. (Written here because no kept library reads it for
    Twisted; the format is the HTML standard's section 9.2.)
    """

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        self._pending += chunk
        messages = []
        while True:
            line, found, rest = _split_line(self._pending)
            if not found:
                return messages
            self._pending = rest
            message = self._line(line.decode("utf-8", "replace"))
            if message is not None:
                messages.append(message)

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            message = SSEMessage("\n".join(self._data), self._event, self._id)
            self._data, self._event = [], None
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def _split_line(buffer: bytes) -> tuple[bytes, bool, bytes]:
    """
    The first line of C{buffer} (ended by CRLF, LF or CR) and the rest.
    """
    for index, byte in enumerate(buffer):
        if byte == 0x0A:
            return buffer[:index], True, buffer[index + 1:]
        if byte == 0x0D:
            if index + 1 == len(buffer):
                return b"", False, buffer  # a CR may be the start of a CRLF
            skip = 2 if buffer[index + 1] == 0x0A else 1
            return buffer[:index], True, buffer[index + skip:]
    return b"", False, buffer


def stream_event(message: SSEMessage) -> dict[str, Any] | None:
    """
    A stream message as an event: the event's JSON, or a control message
    (C{stream.gap}, C{stream.dropped}) with its fields.
    """
    try:
        data = json.loads(message.data)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if message.event is not None:
        return {**data, "event": f"stream.{message.event}"}
    return data


@implementer(IAdminClient)
class HTTPAdminClient:
    """
    L{IAdminClient} over HTTP, with treq.

    @param url: the admin listener, e.g. C{http://127.0.0.1:9090}.
    @param token: the admin token, sent as C{Authorization: Bearer}; C{None} for none.
    @param http: a treq C{HTTPClient} (tests pass one on their reactor); by default
        treq's module functions on the global reactor.
    @param timeout: seconds a request may take (a wait adds its own).
    """

    def __init__(self, url: str, token: str | None = None, *, http=None,
                 timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._http = http if http is not None else treq
        self.timeout = timeout

    def _headers(self, accept: bytes = b"application/json") -> dict[bytes, list[bytes]]:
        headers = {b"Accept": [accept]}
        if self._token:
            headers[b"Authorization"] = [b"Bearer " + self._token.encode("utf-8")]
        return headers

    async def _call(self, method: str, path: str, *, wait: float | None = None,
                    ok: tuple[int, ...] = (200,)) -> dict:
        params = {"wait": f"{wait:g}"} if wait is not None else None
        timeout = self.timeout + (wait or 0)
        try:
            response = await self._http.request(method, self.url + path, params=params,
                                                headers=self._headers(), timeout=timeout)
            text = await response.content()
        except Exception as error:
            raise AdminUnreachable(f"cannot reach the admin API at {self.url}: "
                                   f"{_describe(error)}") from None
        try:
            body = json.loads(text)
        except ValueError:
            raise AdminUnreachable(f"{self.url}{path} answered {response.code} without "
                                   "JSON: is this the orchestrator's admin listener?") from None
        if response.code in ok:
            return body
        message = body.get("error") if isinstance(body, dict) else None
        error_type = _ERRORS.get(response.code, AdminClientError)
        error = error_type(message or f"{method} {path}: HTTP {response.code}",
                           body if isinstance(body, dict) else None)
        error.code = response.code
        raise error

    def _agent_path(self, name: str, action: str = "") -> str:
        return f"/api/agents/{quote(name, safe='')}" + (f"/{action}" if action else "")

    def agents(self) -> Deferred:
        return Deferred.fromCoroutine(self._call("GET", "/api/agents"))

    def agent(self, name: str) -> Deferred:
        return Deferred.fromCoroutine(self._call("GET", self._agent_path(name)))

    def wake(self, name: str, wait: float | None = None) -> Deferred:
        return Deferred.fromCoroutine(self._call("POST", self._agent_path(name, "wake"),
                                                 wait=wait, ok=(200, 202)))

    def sleep(self, name: str, wait: float | None = None) -> Deferred:
        return Deferred.fromCoroutine(self._call("POST", self._agent_path(name, "sleep"),
                                                 wait=wait, ok=(200, 202)))

    def events(self) -> Deferred:
        return Deferred.fromCoroutine(self._call("GET", "/api/events"))

    def config(self) -> Deferred:
        return Deferred.fromCoroutine(self._call("GET", "/api/config"))

    def follow(self, deliver: Callable[[dict], None],
               last_event_id: str | None = None) -> Deferred:
        return Deferred.fromCoroutine(self._follow(deliver, last_event_id))

    async def _follow(self, deliver, last_event_id) -> Following:
        headers = self._headers(b"text/event-stream")
        if last_event_id:
            headers[b"Last-Event-ID"] = [last_event_id.encode("ascii")]
        try:
            response = await self._http.get(self.url + "/api/events", headers=headers,
                                            timeout=self.timeout)
        except Exception as error:
            raise AdminUnreachable(f"cannot reach the admin API at {self.url}: "
                                   f"{_describe(error)}") from None
        if response.code != 200:
            text = await response.content()
            try:
                message = json.loads(text).get("error")
            except (ValueError, AttributeError):
                message = None
            error = _ERRORS.get(response.code, AdminClientError)(
                message or f"GET /api/events: HTTP {response.code}")
            error.code = response.code
            raise error
        reader = _StreamReader(deliver, last_event_id)
        response.deliverBody(reader)
        return reader.following


class _StreamReader(Protocol):
    """
    Reads an event stream's body as it comes, delivering each event.
    """

    def __init__(self, deliver: Callable[[dict], None], last_event_id: str | None) -> None:
        self._deliver = deliver
        self._parser = SSEParser()
        self.following = Following(ended=Deferred(), stop=self._stop,
                                   last_event_id=last_event_id)

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        for message in self._parser.feed(data):
            event = stream_event(message)
            if event is None:
                continue
            if message.id is not None and message.event is None:
                self.following.last_event_id = message.id
            self._deliver(event)

    def connectionLost(self, reason=None) -> None:
        if not self.following.ended.called:
            self.following.ended.callback(None)


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        error = reasons[0].value
    return str(error) or type(error).__name__
