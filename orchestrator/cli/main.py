"""
C{orchestrator-ctl}: the orchestrator's admin API from a shell.

    orchestrator-ctl agents                      every agent, its state, why it is awake
    orchestrator-ctl agent NAME                  one agent in detail
    orchestrator-ctl wake NAME [--wait [S]]      wake it; --wait follows its phases
    orchestrator-ctl sleep NAME [--wait [S]]     drain it and scale it to 0
    orchestrator-ctl events [--follow]           the recent events, then the new ones
    orchestrator-ctl leases [NAME]               busy leases
    orchestrator-ctl routes [NAME]               hosts registered at run time
    orchestrator-ctl config                      the running configuration (redacted)

Tables for people, C{--json} for scripts; errors are one line on stderr, never a
traceback, and the exit status says what happened (L{EXIT_CODES}). It talks only to the
admin API, through L{orchestrator.admin.client}.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from orchestrator.admin.client import (
    AdminClientError,
    AdminUnreachable,
    AgentDegraded,
    HTTPAdminClient,
    IAdminClient,
    Refused,
    Unauthorized,
    UnknownAgent,
)
from orchestrator.cli import render
from orchestrator.cli.settings import (
    DEFAULT_FILE,
    ENV_FILE,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ENV_URL,
    SettingsError,
    resolve,
)

PROG = "orchestrator-ctl"

EXIT_OK = 0
#: The agent ended degraded: its wake failed, or it could not be put to sleep.
EXIT_AGENT_FAILED = 1
#: Bad arguments or settings.
EXIT_USAGE = 2
EXIT_UNKNOWN_AGENT = 3
#: Refused: an always-on agent is not woken or put to sleep.
EXIT_REFUSED = 4
#: C{--wait} passed before the agent got there.
EXIT_TIMEOUT = 5
EXIT_UNAUTHORIZED = 6
#: No admin API there, or it answered something else.
EXIT_UNREACHABLE = 7

EXIT_CODES: Mapping[type[AdminClientError], int] = {
    AgentDegraded: EXIT_AGENT_FAILED,
    UnknownAgent: EXIT_UNKNOWN_AGENT,
    Refused: EXIT_REFUSED,
    Unauthorized: EXIT_UNAUTHORIZED,
    AdminUnreachable: EXIT_UNREACHABLE,
}

#: Seconds between two looks at a wake in progress.
POLL_INTERVAL = 0.2
#: Seconds --wait waits when given without a number.
DEFAULT_WAIT = 120.0
#: Seconds before following the event stream again after it ended.
RECONNECT_DELAY = 1.0


class Console:
    """
    Where the output goes; C{live} when it is a terminal (a progress line is then
    rewritten in place, else each change is a line of its own).
    """

    def __init__(self, out: TextIO, err: TextIO, live: bool | None = None) -> None:
        self.out = out
        self.err = err
        self.live = out.isatty() if live is None else live
        self._line_open = False

    def print(self, text: str = "") -> None:
        self.end_line()
        self.out.write(text + "\n")
        self.out.flush()

    def json(self, value: Any, *, lines: bool = False) -> None:
        if lines:
            self.print(json.dumps(value, default=str, separators=(",", ":")))
        else:
            self.print(json.dumps(value, default=str, indent=2))

    def progress(self, text: str) -> None:
        if self.live:
            self.out.write("\r\x1b[K" + text)
            self._line_open = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def end_line(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False

    def error(self, message: str) -> None:
        self.end_line()
        self.err.write(f"{PROG}: {' '.join(message.split())}\n")
        self.err.flush()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Operate a running orchestrator through its admin API.",
        epilog=(f"The admin URL comes from --url, ${ENV_URL}, the settings file "
                f"(--config, ${ENV_FILE}, {DEFAULT_FILE}: url = ..., token_file = ...), "
                f"else http://127.0.0.1:9090. The token from --token-file, ${ENV_TOKEN}, "
                f"${ENV_TOKEN_FILE}, or the settings file. Exit status: 0 done, "
                "1 the agent ended degraded, 2 usage, 3 no such agent, 4 refused "
                "(always-on), 5 --wait ran out, 6 bad token, 7 admin API unreachable."))
    parser.add_argument("--url", help="the admin listener, e.g. http://127.0.0.1:9090")
    parser.add_argument("--token-file", help="a file holding the admin token")
    parser.add_argument("--config", help="a settings file (key = value lines)")
    parser.add_argument("--json", action="store_true", help="JSON output for scripts")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds one request may take (default 10)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("agents", help="every agent: state, why awake, when it sleeps")
    one = commands.add_parser("agent", help="one agent in detail")
    one.add_argument("name")
    for name, helping in (("wake", "wake an on-demand agent"),
                          ("sleep", "drain an on-demand agent and scale it to 0")):
        command = commands.add_parser(name, help=helping)
        command.add_argument("name")
        command.add_argument("--wait", nargs="?", type=_seconds, const=DEFAULT_WAIT,
                             default=None, metavar="SECONDS",
                             help=f"wait until it got there (default {DEFAULT_WAIT:g}s)")
    events = commands.add_parser("events", help="the recent events (and new ones)")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--type", action="append", default=[], metavar="PATTERN",
                        help="only events of this type (agent.*); repeatable")
    events.add_argument("--agent", action="append", default=[], metavar="NAME",
                        help="only events of this agent; repeatable")
    events.add_argument("--limit", type=_count, default=None,
                        help="stop after this many events")
    for name, helping in (("leases", "busy leases"), ("routes", "hosts registered at run time")):
        command = commands.add_parser(name, help=helping)
        command.add_argument("name", nargs="?")
    commands.add_parser("config", help="the running configuration, secrets redacted")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


# The commands ------------------------------------------------------------------------


async def agents(arguments, client: IAdminClient, console: Console, clock) -> int:
    listing = await client.agents()
    if arguments.json:
        console.json(listing)
    else:
        console.print(render.agents_table(listing))
    return EXIT_OK


async def agent(arguments, client: IAdminClient, console: Console, clock) -> int:
    view = await client.agent(arguments.name)
    if arguments.json:
        console.json(view)
    else:
        console.print(render.agent_detail(view))
    return EXIT_OK


async def wake(arguments, client: IAdminClient, console: Console, clock) -> int:
    """
    Wake; with C{--wait}, look at the agent every L{POLL_INTERVAL} and show its phase
    until it is ready, degraded, or the wait is over.
    """
    started = clock.seconds()
    view = await client.wake(arguments.name)
    if arguments.wait is None:
        _show_state(arguments, console, view)
        return EXIT_OK
    deadline = started + arguments.wait
    shown = None
    while view["status"] == "starting" and clock.seconds() < deadline:
        if not arguments.json:
            line = render.progress_line(view, clock.seconds() - started)
            # A terminal gets the clock ticking; a log only gets the phase changes.
            if console.live or (view.get("phase"), view["status"]) != shown:
                console.progress(line)
                shown = (view.get("phase"), view["status"])
        await deferLater(clock, POLL_INTERVAL, lambda: None)
        view = await client.agent(arguments.name)
    console.end_line()
    elapsed = clock.seconds() - started
    if arguments.json:
        console.json(view)
    if view["status"] == "ready":
        if not arguments.json:
            wake_record = view.get("last_wake")
            took = f" (wake took {render.duration(wake_record['seconds'])}: " \
                   f"{render.phases_text(wake_record.get('phases') or {})})" \
                if wake_record and wake_record.get("succeeded", True) else ""
            console.print(f"{view['agent']}: ready after {render.duration(elapsed)}{took}")
        return EXIT_OK
    if view["status"] == "degraded":
        console.error(f"{view['agent']} is degraded: {view.get('reason') or 'unknown reason'}")
        return EXIT_AGENT_FAILED
    console.error(f"{view['agent']} is still {render.state_text(view)} after "
                  f"{render.duration(arguments.wait)}")
    return EXIT_TIMEOUT


async def sleep(arguments, client: IAdminClient, console: Console, clock) -> int:
    view = await client.sleep(arguments.name, wait=arguments.wait)
    if arguments.json:
        console.json(view)
    if view["status"] == "sleeping":
        if not arguments.json:
            console.print(f"{view['agent']}: sleeping")
        return EXIT_OK
    if arguments.wait is not None:
        console.error(f"{view['agent']} is still {render.state_text(view)} after "
                      f"{render.duration(arguments.wait)}")
        return EXIT_TIMEOUT
    if not arguments.json:
        console.print(f"{view['agent']}: going to sleep (draining its connections)")
    return EXIT_OK


async def events(arguments, client: IAdminClient, console: Console, clock) -> int:
    """
    The buffered events, then (C{--follow}) each new one, following the stream again
    from the last event seen whenever it ends (the orchestrator restarted, say).
    """
    printed = 0

    def wanted(event: dict) -> bool:
        if arguments.agent and event.get("agent") not in arguments.agent:
            return False
        return not arguments.type or any(fnmatch.fnmatchcase(event.get("event", ""), pattern)
                                         for pattern in arguments.type)

    def show(event: dict) -> None:
        nonlocal printed
        if arguments.limit is not None and printed >= arguments.limit:
            return
        if event.get("event", "").startswith("stream.") or wanted(event):
            printed += 1 if wanted(event) else 0
            if arguments.json:
                console.json(event, lines=True)
            else:
                console.print(render.event_line(event))

    def done() -> bool:
        return arguments.limit is not None and printed >= arguments.limit

    listing = await client.events()
    for event in listing["events"]:
        show(event)
    last_id = listing.get("last_event_id")
    while arguments.follow and not done():
        last_id = await _follow_once(client, show, done, last_id)
        if not done():
            await deferLater(clock, RECONNECT_DELAY, lambda: None)
    return EXIT_OK


async def _follow_once(client: IAdminClient, show, done, last_id: str | None) -> str | None:
    """
    Follow the stream from C{last_id} until it ends or C{done()}; the last id seen.
    """
    finished: Deferred = Deferred()

    def deliver(event: dict) -> None:
        show(event)
        if done() and not finished.called:
            finished.callback(None)

    following = await client.follow(deliver, last_event_id=last_id)
    following.ended.addBoth(lambda _: None if finished.called else finished.callback(None))
    await finished
    following.stop()
    return following.last_event_id


async def _listing_for(arguments, client: IAdminClient) -> dict:
    if arguments.name is None:
        return await client.agents()
    return {"agents": [await client.agent(arguments.name)]}


async def leases(arguments, client: IAdminClient, console: Console, clock) -> int:
    listing = await _listing_for(arguments, client)
    if arguments.json:
        console.json([{"agent": view["agent"], **lease} for view in listing["agents"]
                      for lease in view.get("leases") or []])
    else:
        console.print(render.leases_table(listing))
    return EXIT_OK


async def routes(arguments, client: IAdminClient, console: Console, clock) -> int:
    listing = await _listing_for(arguments, client)
    if arguments.json:
        console.json([{"agent": view["agent"], **route} for view in listing["agents"]
                      for route in view.get("routes") or []])
    else:
        console.print(render.routes_table(listing))
    return EXIT_OK


async def config(arguments, client: IAdminClient, console: Console, clock) -> int:
    console.json(await client.config())
    return EXIT_OK


def _show_state(arguments, console: Console, view: dict) -> None:
    if arguments.json:
        console.json(view)
    else:
        console.print(f"{view['agent']}: {render.state_text(view)}")


COMMANDS: Mapping[str, Callable[..., Any]] = {
    "agents": agents, "agent": agent, "wake": wake, "sleep": sleep, "events": events,
    "leases": leases, "routes": routes, "config": config,
}


async def run(arguments, client: IAdminClient, console: Console, clock) -> int:
    """
    Run the command C{arguments} name; return the exit status. Every failure is one
    line on the console's error stream.
    """
    try:
        return await COMMANDS[arguments.command](arguments, client, console, clock)
    except AdminClientError as error:
        console.error(error.message)
        return next((code for kind, code in EXIT_CODES.items() if isinstance(error, kind)),
                    EXIT_UNREACHABLE if error.code == 0 else EXIT_AGENT_FAILED)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """
    The console script: parse, find the settings, run on the reactor, exit with the
    command's status.
    """
    environ = os.environ if environ is None else environ
    arguments = parser().parse_args(argv)
    console = Console(sys.stdout, sys.stderr)
    try:
        settings = resolve(url=arguments.url, token_file=arguments.token_file,
                           config_file=arguments.config, environ=environ, read=_read_file)
    except SettingsError as error:
        console.error(str(error))
        raise SystemExit(EXIT_USAGE) from None

    from twisted.internet import reactor
    from twisted.internet.task import react

    async def on_reactor(reactor_) -> None:
        client = HTTPAdminClient(settings.url, settings.token, http=_http(reactor_),
                                 timeout=arguments.timeout)
        try:
            status = await run(arguments, client, console, reactor_)
        except Exception as error:  # one line, never a traceback
            console.error(f"unexpected error: {type(error).__name__}: {error}")
            status = EXIT_AGENT_FAILED
        raise SystemExit(status)

    try:
        react(lambda reactor_: Deferred.fromCoroutine(on_reactor(reactor_)), _reactor=reactor)
    except KeyboardInterrupt:
        console.end_line()
        raise SystemExit(130) from None


def _http(reactor):
    import treq.client
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    return treq.client.HTTPClient(Agent(reactor, pool=pool))


def _read_file(path: str) -> str:
    with open(os.path.expanduser(path), encoding="utf-8") as f:
        return f.read()
