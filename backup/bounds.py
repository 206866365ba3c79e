"""Limits on untrusted structured input (manifests from a store, config files), checked before and
after parsing, so that one hostile file gives one clear error instead of a RecursionError (or a
crash in C) that takes the whole command down.

Pure; no I/O.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable

MAX_DEPTH = 32  # volsafe's own manifests and configs nest 3 or 4 levels deep

_ESCAPE = re.compile(r"\\.", re.S)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Return whether JSON ``text`` nests arrays and objects more than ``limit`` deep.

    Linear in the text (no backtracking regex, no recursion). Exact for valid JSON; for invalid JSON
    exact up to its first syntax error, which is as far as a parser gets.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    # Escapes first (so an escaped quote ends no string), then strings, then all but brackets.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def data_depth_exceeds(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Return whether parsed ``data`` (dicts and lists) nests more than ``limit`` deep; iterative."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        children: Iterable[Any]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False
