"""
The host -> agent table: exact names first, then the longest C{*.suffix} wildcard.

Static routes come from the configuration; dynamic routes are added at run time (an
agent registering a hostname) and belong to that agent, so they can be dropped together.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class HostConflict(Exception):
    """
    The host is already routed to another target.
    """

    def __init__(self, host: str, owner: str) -> None:
        super().__init__(f"host {host!r} is already routed to {owner!r}")
        self.host = host
        self.owner = owner


def normalize_host(host: str) -> str:
    """
    Lower-case C{host} and drop a port and a trailing dot: C{Example.COM.:8080} ->
    C{example.com}. Bracketed IPv6 literals keep their address: C{[::1]:80} -> C{[::1]}.
    """
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.rstrip(".")


class RouteTable(Generic[T]):
    """
    Maps host names to targets (agents). Patterns are exact names or C{*.suffix}
    wildcards; C{*.example.com} matches C{a.example.com} and C{a.b.example.com} but not
    C{example.com}. Lookups cost one dict probe per label of the host.
    """

    def __init__(self) -> None:
        self._exact: dict[str, tuple[T, str]] = {}
        # suffix (without "*.") -> (target, owner)
        self._wildcard: dict[str, tuple[T, str]] = {}

    def add(self, pattern: str, target: T, owner: str) -> None:
        """
        Route C{pattern} to C{target}; C{owner} names who added it (the agent).

        @raise HostConflict: if C{pattern} is routed to another owner already.
        """
        table, key = self._slot(pattern)
        existing = table.get(key)
        if existing is not None and existing[1] != owner:
            raise HostConflict(pattern, existing[1])
        table[key] = (target, owner)

    def remove(self, pattern: str) -> None:
        table, key = self._slot(pattern)
        table.pop(key, None)

    def remove_owner(self, owner: str) -> list[str]:
        """
        Drop every route added by C{owner}; return the patterns dropped.
        """
        dropped = []
        for table, prefix in ((self._exact, ""), (self._wildcard, "*.")):
            for key in [k for k, (_, o) in table.items() if o == owner]:
                del table[key]
                dropped.append(prefix + key)
        return dropped

    def patterns(self, owner: str) -> list[str]:
        """
        The patterns C{owner} routes, exact ones first.
        """
        return [k for k, (_, o) in self._exact.items() if o == owner] + [
            "*." + k for k, (_, o) in self._wildcard.items() if o == owner
        ]

    def match(self, host: str) -> T | None:
        """
        Return the target for a request's C{Host} (any case, port ignored), or C{None}.
        """
        host = normalize_host(host)
        found = self._exact.get(host)
        if found is not None:
            return found[0]
        # Longest suffix first: drop one leading label at a time.
        rest = host
        while True:
            dot = rest.find(".")
            if dot == -1:
                return None
            rest = rest[dot + 1 :]
            found = self._wildcard.get(rest)
            if found is not None:
                return found[0]

    def _slot(self, pattern: str) -> tuple[dict[str, tuple[T, str]], str]:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            return self._wildcard, pattern[2:]
        return self._exact, pattern
