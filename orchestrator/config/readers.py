"""
The machinery every configuration reader shares: reading a mapping with a fixed set of
keys, a list, a choice; collecting every problem with its key path; describing a value
as YAML spells it.

A reader takes one YAML (or JSON) value and returns its parsed form or raises
C{ValueError} with a message of the form C{expected ..., got ...}. Readers of mappings
and lists collect the problems of every key or item and raise them together as
L{Problems}, each with its key path.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from enum import Enum
from typing import Any


class ConfigError(Exception):
    """
    The configuration is not valid. C{problems} holds one line per problem, each naming
    the file, the key path and what was expected.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


Reader = Callable[[Any], Any]


class Problems(ValueError):
    """
    Several problems inside one value, each a (key path relative to it, message) pair.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


def read_fields(
    value: object, readers: dict[str, Reader], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """
    Read a mapping with a fixed set of keys, each with its own reader; return the values
    read, by key, as keyword arguments for an attrs class (absent keys keep their default).
    """
    mapping = as_mapping(value)
    problems: list[tuple[str, str]] = []
    fields = {}
    for key, item in mapping.items():
        read = readers.get(key)
        if read is None:
            problems.append((str(key), unknown_key(str(key), list(readers))))
        else:
            fields[key] = collect(problems, key, read, item)
    problems.extend((key, "required") for key in required if key not in mapping)
    if problems:
        raise Problems(problems)
    return fields


def list_of(read_item: Reader) -> Reader:
    """
    A reader of a list whose items are each read with C{read_item}; it returns a tuple.
    """

    def read(value: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {describe(value)}")
        problems: list[tuple[str, str]] = []
        items = tuple(
            collect(problems, f"[{index}]", read_item, item) for index, item in enumerate(value)
        )
        if problems:
            raise Problems(problems)
        return items

    return read


def collect(problems: list[tuple[str, str]], key: str, read: Reader, value: object) -> Any:
    """
    Return C{read(value)}; if it fails, add its problems under C{key} to C{problems} and
    return C{None}, which the caller never uses: it raises once it has read everything.
    """
    try:
        return read(value)
    except Problems as e:
        problems.extend((join_path(key, path), message) for path, message in e.problems)
    except ValueError as e:
        problems.append((key, str(e)))
    return None


def join_path(key: str, path: str) -> str:
    """
    A key path: C{("idle", "timeout")} -> C{"idle.timeout"}, C{("hosts", "[2]")} -> C{"hosts[2]"}.
    """
    if not path:
        return key
    if path.startswith("["):
        return key + path
    return f"{key}.{path}"


def unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f'unknown key, did you mean "{close[0]}"?'
    return "unknown key, expected one of " + ", ".join(f'"{k}"' for k in known)


def as_mapping(value: object) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {describe(value)}")
    return value


def describe(value: object) -> str:
    """
    Show a value in a message as YAML would spell it (C{"soon"}, C{5}, C{null}), or by its
    kind for collections (C{a list}).
    """
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None or isinstance(value, str | bool | int | float):
        return json.dumps(value, ensure_ascii=False)
    return f"a {type(value).__name__}"


def one_of(choices: type[Enum]) -> Reader:
    """
    A reader of one of an enumeration's values: C{"on_demand"} -> C{Policy.ON_DEMAND}.
    """

    def read(value: object) -> Enum:
        for choice in choices:
            if value == choice.value:
                return choice
        expected = " or ".join(f'"{choice.value}"' for choice in choices)
        raise ValueError(f"expected {expected}, got {describe(value)}")

    return read
