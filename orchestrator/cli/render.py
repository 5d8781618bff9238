"""
How C{orchestrator-ctl} shows the admin API's answers to people: tables, one agent in
detail, the progress line of a wake, one line per event. Pure: JSON in, text out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def duration(seconds: float | None) -> str:
    """
    C{None} -> C{-}; 0.4 -> C{0.4s}; 75 -> C{1m 15s}; 7300 -> C{2h 1m}.
    """
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def clock_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    Columns padded to their widest cell, the last one left ragged.
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows,
                                                                       strict=False)]
    lines = []
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def state_text(view: dict[str, Any]) -> str:
    """
    C{ready}, C{starting (probing)}, C{degraded: reason}.
    """
    text = view["status"]
    if view.get("phase"):
        text += f" ({view['phase']})"
    if view.get("reason"):
        text += f": {view['reason']}"
    return text


def why_awake(view: dict[str, Any]) -> str:
    awake = view.get("awake")
    if not awake:
        return "-"
    return "; ".join(awake.get("reasons") or []) or "-"


def last_wake(view: dict[str, Any]) -> str:
    wake = view.get("last_wake")
    if not wake:
        return "-"
    text = duration(wake["seconds"])
    return text if wake.get("succeeded", True) else text + " (failed)"


def agents_table(listing: dict[str, Any]) -> str:
    rows = [(view["agent"], state_text(view), view["policy"], str(view["in_flight"]),
             str(view["connections"]), duration(view.get("sleeps_in")), last_wake(view),
             why_awake(view))
            for view in listing["agents"]]
    if not rows:
        return "no agents"
    return table(("AGENT", "STATE", "POLICY", "REQUESTS", "SOCKETS", "SLEEPS IN",
                  "LAST WAKE", "AWAKE BECAUSE"), rows)


def phases_text(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {duration(seconds)}" for name, seconds in phases.items()) or "-"


def agent_detail(view: dict[str, Any]) -> str:
    now = view.get("time")
    lines = [
        f"agent:          {view['agent']}",
        f"state:          {state_text(view)} (since {clock_time(view.get('since'))})",
        f"policy:         {view['policy']} ({view.get('origin', 'config')})",
        f"service:        {view['service']}",
        f"backend:        {view['backend']}",
        f"hosts:          {', '.join(view.get('hosts') or []) or '-'}",
        f"awake because:  {why_awake(view)}",
        f"requests:       {view['in_flight']} in flight, {view.get('held', 0)} held",
        f"websockets:     {view['connections']} open",
        f"last activity:  {clock_time(view.get('last_activity'))}"
        + (f" ({duration(now - view['last_activity'])} ago)" if now else ""),
        f"sleeps in:      {duration(view.get('sleeps_in'))}",
    ]
    leases = view.get("leases") or []
    lines.append(f"leases:         {len(leases)}")
    for lease in leases:
        lines.append(f"  {lease['id']}  {lease['reason']}  "
                     f"{duration(lease.get('remaining'))} left")
    routes = view.get("routes") or []
    lines.append(f"routes:         {len(routes)} registered")
    for route in routes:
        lines.append(f"  {route['host']} -> {route['backend']}")
    wakes = view.get("recent_wakes") or []
    lines.append(f"recent wakes:   {len(wakes)}")
    for wake in wakes:
        outcome = "ready" if wake.get("succeeded", True) else "failed"
        lines.append(f"  {clock_time(wake['started'])}  {duration(wake['seconds'])}  "
                     f"{outcome}  ({phases_text(wake.get('phases') or {})})")
    return "\n".join(lines)


def progress_line(view: dict[str, Any], elapsed: float) -> str:
    """
    Where a wake is: C{alpha: starting, scheduling, 1.2s (about 0.8s left)}.
    """
    text = f"{view['agent']}: {view['status']}"
    if view.get("phase"):
        text += f", {view['phase']}"
    text += f", {duration(elapsed)}"
    if view.get("estimated_wait") is not None and view["status"] == "starting":
        text += f" (about {duration(view['estimated_wait'])} left)"
    return text


def event_line(event: dict[str, Any]) -> str:
    """
    C{12:00:01  agent.ready  alpha  previous=starting state=ready wake_seconds=0.78}.
    """
    fields = " ".join(f"{key}={value}" for key, value in event.items()
                      if key not in ("event", "agent", "time", "id"))
    parts = [clock_time(event.get("time")), event.get("event", "?"),
             event.get("agent") or "-"]
    return "  ".join(parts) + (f"  {fields}" if fields else "")


def leases_table(listing: dict[str, Any]) -> str:
    rows = [(view["agent"], lease["id"], lease["reason"], duration(lease.get("remaining")))
            for view in listing["agents"] for lease in view.get("leases") or []]
    return table(("AGENT", "LEASE", "REASON", "REMAINING"), rows) if rows else "no leases"


def routes_table(listing: dict[str, Any]) -> str:
    rows = [(view["agent"], route["host"], route["backend"],
             clock_time(route.get("registered_at")))
            for view in listing["agents"] for route in view.get("routes") or []]
    return table(("AGENT", "HOST", "BACKEND", "REGISTERED"), rows) if rows \
        else "no registered routes"
