"""Declared settings: a name, a converter, a default and a help text, in one place.

A backend module declares the keys of its ``[backends.NAME]`` table as ``Setting``s (see
``storage_backends.registry``); volsafe's config file declares its own keys with the same class.
A converter is any callable ``convert(value, expand) -> value`` that returns the checked, converted
value or raises ValueError with the message shown to the user (``Invalid`` for several messages, or
ones that belong to a key inside the value). ``expand(text)`` replaces ``${VAR}`` references; a
converter of strings calls it, others ignore it. The converters here are the ones backends need.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

Expand = Callable[[str], str]  # replaces ${VAR} in a string; raises ValueError for an unset variable
Converter = Callable[[Any, Expand], Any]


@dataclass(frozen=True)
class Setting:
    """One key of a config table: its converter, default, and what it means (shown in errors)."""

    name: str
    convert: Converter
    help: str
    default: Any = None
    required: bool = False
    secret: bool = False  # may also be given as NAME_file (read from that file)


class Invalid(ValueError):
    """Several problems with one value; each is (path below the value's key, message)."""

    def __init__(self, problems: Iterable[tuple[tuple[str, ...], str]]):
        self.problems = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


def toml_type(value: Any) -> str:
    """Return how a value's TOML type reads in a message: "a string", "a number", "a table"…"""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def closest(name: str, known: Iterable[str]) -> str | None:
    """Return the one of ``known`` that ``name`` is probably a typo of, or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest of ``known``, or "" when none is close."""
    close = closest(name, known)
    return f" (did you mean {close!r}?)" if close else ""


@dataclass(frozen=True)
class Text:
    """A string (``${VAR}`` references expanded), one of ``choices`` if any are given."""

    choices: tuple[str, ...] = ()

    def __call__(self, value: Any, expand: Expand) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {toml_type(value)}")
        value = expand(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, not {value!r}{did_you_mean(value, self.choices)}")
        return value


@dataclass(frozen=True)
class Flag:
    """true or false."""

    def __call__(self, value: Any, expand: Expand) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {toml_type(value)}")
        return value


@dataclass(frozen=True)
class WholeNumber:
    """An integer within [minimum, maximum] (either bound may be absent)."""

    minimum: int | None = None
    maximum: int | None = None

    def __call__(self, value: Any, expand: Expand) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {toml_type(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, not {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}, not {value}")
        return value


TEXT = Text()
FLAG = Flag()
