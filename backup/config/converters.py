"""Converters of config values: each checks one TOML value and returns what volsafe uses.

A converter is called as ``convert(value, expand)`` and returns the converted value, or raises
ValueError with the message the user sees (``Invalid`` for several, or for keys inside the value);
``expand`` replaces ``${VAR}`` references in a string. Strings, booleans and bounded whole numbers
come from ``storage_backends.settings``, which backends declare their settings with; the converters
here are the config file's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backup.archive.naming import VOLUME_NAME
from backup.jobs.retention import RULE_NAMES, Policy
from backup.jobs.schedule import parse_duration, timezone_of
from storage_backends.registry import type_names
from storage_backends.settings import TEXT, Expand, Invalid, Text, did_you_mean


def known_or_listed(name: str, known: list[str]) -> str:
    """Return `` (did you mean 'x'?)`` for a close match, else `` (known keys: a, b, …)``."""
    return did_you_mean(name, known) or f" (known keys: {', '.join(sorted(known))})"


@dataclass(frozen=True)
class Duration:
    """Seconds: a number, or text such as "10s", "6h", "1h30m"; at least ``minimum``."""

    minimum: float = 0

    def __call__(self, value: Any, expand: Expand) -> float:
        seconds = parse_duration(value)
        if seconds < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}s")
        return seconds


@dataclass(frozen=True)
class OptionalText:
    """A string where "" means unset (None); ``then`` converts a non-empty one further."""

    then: Callable[[str], Any] = str

    def __call__(self, value: Any, expand: Expand) -> Any:
        text = TEXT(value, expand)
        return self.then(text) if text else None


@dataclass(frozen=True)
class StrList:
    """A list of strings (each ``${VAR}``-expanded), as a tuple; ``item`` raises ValueError for a bad one."""

    item: Callable[[str], None] | None = None

    def __call__(self, value: Any, expand: Expand) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError('must be a list of strings, e.g. ["a", "b"]')
        items, problems = _each(expand, value)
        if self.item and not problems:
            problems = _each(self.item, items)[1]
        if problems:
            raise Invalid(problems)
        return tuple(items)


def _each(convert: Callable[[str], Any], items: list[str]) -> tuple[list, list]:
    """Return (the results of ``convert`` on each item, a problem for each ValueError it raised)."""
    results, problems = [], []
    for item in items:
        try:
            results.append(convert(item))
        except ValueError as exc:
            problems.append(((), str(exc)))
    return results, problems


@dataclass(frozen=True)
class StrMap:
    """A table of strings, as a dict (no ``${VAR}`` expansion)."""

    def __call__(self, value: Any, expand: Expand) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError('must be a table of strings, e.g. { app = "db" }')
        return dict(value)


@dataclass(frozen=True)
class Retention:
    """An inline table of keep_* counts, as a retention Policy."""

    def __call__(self, value: Any, expand: Expand) -> Policy:
        if not isinstance(value, dict):
            raise ValueError("must be a table, e.g. { keep_last = 7, keep_daily = 14 }")
        counts, problems = {}, []
        for name, count in value.items():
            if name not in RULE_NAMES:
                problems.append(((name,), f"unknown retention rule{known_or_listed(name, list(RULE_NAMES))}"))
            elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
                problems.append(((name,), f"must be a whole number >= 0, not {count!r}"))
            else:
                counts[name] = count
        if problems:
            raise Invalid(problems)
        return Policy(**counts)


@dataclass(frozen=True)
class TimeZone:
    """An IANA time zone name ("" is passed on unchecked, as before)."""

    def __call__(self, value: Any, expand: Expand) -> str:
        zone = TEXT(value, expand)
        if zone:
            timezone_of(zone)  # raises ValueError naming the zone
        return zone


@dataclass(frozen=True)
class HostPort:
    """HOST:PORT of a listening socket ("" is passed on unchecked: off)."""

    def __call__(self, value: Any, expand: Expand) -> str:
        text = TEXT(value, expand)
        host, sep, port = text.rpartition(":")
        if text and (not sep or not port.isdigit() or not 0 <= int(port) <= 65535):
            raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:9180, not {text!r}")
        return text


@dataclass(frozen=True)
class BackendTypeName:
    """The ``type`` of a [backends.NAME] table: a type in the backend registry."""

    def __call__(self, value: Any, expand: Expand) -> str:
        return Text(tuple(type_names()))(value, expand)


def volume_name(name: str) -> None:
    if not VOLUME_NAME.fullmatch(name):
        raise ValueError(f"invalid volume name {name!r}")


def exclude_pattern(pattern: str) -> None:
    if not pattern.strip() or pattern.strip().strip("/") in ("", ".") or ".." in pattern.split("/"):
        raise ValueError(f"invalid exclude pattern {pattern!r}")


STR_LIST = StrList()
OPTIONAL_TEXT = OptionalText()
FILE_PATH = OptionalText(lambda text: Path(text).expanduser())
