"""
The running configuration as JSON, secrets redacted (C{GET /api/config}).

What is a secret is said once, in the model: a field kept out of its class's C{repr}
(C{attrs.field(repr=False)}: the admin token, a consumer's URL) is never shown either;
a set secret reads C{"<redacted>"}, an unset one C{null}. A secret URL keeps its scheme
and host, which say where events go without giving the path that holds the key.
"""

from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import attrs

REDACTED = "<redacted>"


def redacted(value: Any) -> Any:
    """
    C{value} (an attrs instance of the configuration, or anything in one) as JSON-ready
    data, every secret field redacted.
    """
    if attrs.has(type(value)):
        out: dict[str, Any] = {}
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            if field.repr is False:
                out[field.name] = _redact_secret(item)
            else:
                out[field.name] = redacted(item)
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [redacted(item) for item in value]
    if isinstance(value, dict):
        return {str(key): redacted(item) for key, item in value.items()}
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value


def _redact_secret(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.scheme and parts.hostname:
            return f"{parts.scheme}://{parts.hostname}/{REDACTED}"
    return REDACTED


def running_configuration(config) -> dict[str, Any]:
    """
    The configuration in effect, as C{GET /api/config} shows it: agents keyed by name,
    as in the file.
    """
    shown = redacted(config)
    shown["agents"] = {agent.pop("name"): agent for agent in shown["agents"]}
    return shown
