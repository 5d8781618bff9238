"""
The machinery every configuration reader shares: reading a mapping with a fixed set of
keys, a list, a choice; collecting every problem with its key path; describing a value
as YAML spells it; holding a value built in code to the reader of its field.

A reader takes one YAML (or JSON) value and returns its parsed form or raises
C{ValueError} with a message of the form C{expected ..., got ...}. Readers of mappings
and lists collect the problems of every key or item and raise them together as
L{Problems}, each an L{Issue} with its key path.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import attrs


@attrs.frozen
class Issue:
    """
    One problem in a configuration: where it is and what was expected.
    """

    #: The key path, relative to the value read: C{idle.timeout}, C{hosts[2]}; C{""} for
    #: the value itself (a whole document that is not a mapping, a file that cannot be read).
    path: str
    #: What is wrong: C{expected a duration like "15m", got "soon"}.
    message: str

    def line(self, source: str | None = None) -> str:
        """
        The issue as one line of a report: C{SOURCE: PATH: MESSAGE}, leaving out the parts
        that are empty.
        """
        return ": ".join(part for part in (source, self.path, self.message) if part)


class ConfigError(Exception):
    """
    The configuration is not valid.

    C{issues} holds the problems as values (key path, message), for a program (an API
    answering in JSON); C{problems} holds them as lines for people, each naming the
    source (the file), the key path and what was expected:
    C{orchestrator.yaml: agents.dutybound.idle.timeout: expected a duration like "15m", got
    "soon"}. The message of the exception is those lines.
    """

    def __init__(self, issues: Iterable[Issue], source: str | None = None) -> None:
        self.issues = tuple(issues)
        #: Where the configuration came from (a file name), or C{None} (a registration).
        self.source = source
        self.problems = [issue.line(source) for issue in self.issues]
        super().__init__("\n".join(self.problems))


Reader = Callable[[Any], Any]


class Problems(ValueError):
    """
    Several problems inside one value, each an L{Issue} with a key path relative to it.
    """

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues)
        self.issues = issues


def read_fields(
    value: object, readers: dict[str, Reader], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """
    Read a mapping with a fixed set of keys, each with its own reader; return the values
    read, by key, as keyword arguments for an attrs class (absent keys keep their default).
    """
    mapping = as_mapping(value)
    issues: list[Issue] = []
    fields = {}
    for key, item in mapping.items():
        read = readers.get(key)
        if read is None:
            issues.append(Issue(str(key), unknown_key(str(key), list(readers))))
        else:
            fields[key] = collect(issues, key, read, item)
    issues.extend(Issue(key, "required") for key in required if key not in mapping)
    if issues:
        raise Problems(issues)
    return fields


def list_of(read_item: Reader) -> Reader:
    """
    A reader of a list whose items are each read with C{read_item}; it returns a tuple.
    """

    def read(value: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {describe(value)}")
        issues: list[Issue] = []
        items = tuple(
            collect(issues, f"[{index}]", read_item, item) for index, item in enumerate(value)
        )
        if issues:
            raise Problems(issues)
        return items

    return read


def collect(issues: list[Issue], key: str, read: Reader, value: object) -> Any:
    """
    Return C{read(value)}; if it fails, add its problems under C{key} to C{issues} and
    return C{None}, which the caller never uses: it raises once it has read everything.
    """
    try:
        return read(value)
    except Problems as e:
        issues.extend(Issue(join_path(key, issue.path), issue.message) for issue in e.issues)
    except ValueError as e:
        issues.append(Issue(key, str(e)))
    return None


def join_path(key: str, path: str) -> str:
    """
    A key path: C{("idle", "timeout")} -> C{"idle.timeout"}, C{("hosts", "[2]")} ->
    C{"hosts[2]"}; an empty part is the value itself: C{("", "hosts[2]")} -> C{"hosts[2]"}.
    """
    if not key:
        return path
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


def instance_of(*kinds: type) -> Reader:
    """
    A reader that takes a value of one of C{kinds} as it is: the items of a tuple of
    values built in code (C{Config.agents}), checked by L{conforms_to}.
    """

    def read(value: object) -> object:
        if not isinstance(value, kinds):
            raise ValueError(f"expected {_names(kinds)}, got {describe(value)}")
        return value

    return read


Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def conforms_to(read: Reader, kind: type | tuple[type, ...]) -> Validator:
    """
    An attrs validator that holds a field to the rule its reader applies to the file, so
    each rule is written once. The value must be of C{kind} (else C{TypeError}), and
    C{read} must accept it and read it as itself (else C{ValueError}): a host must be
    lower-case already, a duration a number of seconds. A tuple is read as the list YAML
    would give. The message names the class and the field:
    C{AgentConfig.hosts[1]: expected a host name like "agent.example.com", got "*.com" (...)}.

    A C{bool} is an C{int} to Python but not to a reader: it passes only if C{kind} says so.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        where = f"{type(instance).__name__}.{attribute.name}"
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise TypeError(f"{where}: expected {_names(kinds)}, got {describe(value)}")
        try:
            canonical = read(list(value) if isinstance(value, tuple) else value)
        except Problems as e:
            raise ValueError("; ".join(f"{join_path(where, issue.path)}: {issue.message}"
                                       for issue in e.issues)) from None
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if isinstance(value, tuple):
            for index, (item, item_read) in enumerate(zip(value, canonical, strict=True)):
                _check_canonical(f"{where}[{index}]", item, item_read)
        else:
            _check_canonical(where, value, canonical)

    return validate


def _check_canonical(where: str, value: object, canonical: object) -> None:
    # Equality, not identity of types: 60 == 60.0, a whole number of seconds is a duration.
    if canonical != value:
        raise ValueError(f"{where}: got {describe(value)}, expected its canonical form "
                         f"{describe(canonical)}")


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(kind.__name__ for kind in kinds)
