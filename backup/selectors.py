"""Pure selection rules: which volumes a backup or job takes, and which paths inside a volume it leaves out.

No Docker I/O here: callers hand in the daemon's volume listing (``docker volume ls`` entries).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from backup.errors import UsageError

COMPOSE_PROJECT = "com.docker.compose.project"


@dataclass(frozen=True)
class VolumeSelector:
    """What to pick from the daemon's volumes: names, every volume, labels, a Compose project, minus exclusions."""

    names: tuple[str, ...] = ()
    all: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)  # all must match; "" matches any value
    projects: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # volume names (glob patterns allowed) never to pick

    @property
    def needs_listing(self) -> bool:
        """Return whether the daemon's volume list is needed (anything beyond plain names)."""
        return self.all or bool(self.labels) or bool(self.projects)

    @property
    def empty(self) -> bool:
        return not self.names and not self.needs_listing


def parse_label(text: str) -> tuple[str, str]:
    """Return (key, value) of ``KEY=VALUE`` (or ``KEY``: any value). Raises UsageError for an empty key."""
    key, _, value = text.partition("=")
    if not key.strip():
        raise UsageError(f"invalid label selector {text!r}: expected KEY=VALUE")
    return key.strip(), value


def _labels_match(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(key in labels and (value == "" or labels[key] == value) for key, value in wanted.items())


def pick_volumes(selector: VolumeSelector, listing: Iterable[Mapping]) -> list[str]:
    """Return the sorted names the selector picks from ``listing`` (entries with ``Name`` and ``Labels``).

    Named volumes are taken as given (a missing one fails later, on its own line); ``--all``,
    labels and projects pick from the listing (labels and projects must all match a volume);
    exclusions are removed last, whatever picked the volume.
    """
    picked = set(selector.names)
    if selector.needs_listing:
        for entry in listing:
            labels = entry.get("Labels") or {}
            if selector.labels and not _labels_match(labels, selector.labels):
                continue
            if selector.projects and labels.get(COMPOSE_PROJECT) not in selector.projects:
                continue
            picked.add(entry["Name"])
    return sorted(name for name in picked if not any(fnmatch.fnmatchcase(name, pattern) for pattern in selector.exclude))


def _prefix_match(parts: list[str], wanted: list[str]) -> bool:
    """Return whether the glob components ``wanted`` match a leading part of ``parts`` (``**``: any depth)."""
    if not wanted:
        return True  # the pattern matched an ancestor: everything below it goes too
    if wanted[0] == "**":
        return any(_prefix_match(parts[i:], wanted[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], wanted[0]) and _prefix_match(parts[1:], wanted[1:])


def path_excluded(path: str, patterns: Iterable[str]) -> bool:
    """Return whether the entry ``path`` (relative to the volume root, ``./`` allowed) is left out.

    A pattern without ``/`` (``*.log``, ``cache``) matches any single path component, so it also
    leaves out everything under a matching directory. A pattern with ``/`` matches from the volume
    root (a leading ``/`` is optional; ``**`` stands for any number of directories): ``/var/cache``,
    ``tmp/*`` and ``**/node_modules`` leave out those paths and all below them. Patterns are shell
    globs (``*``, ``?``, ``[...]``); ``*`` does not cross ``/``.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        return False  # the volume root itself is always kept
    for pattern in patterns:
        pattern = pattern.strip()
        if "/" not in pattern:
            wanted = ["**", pattern]
        else:
            wanted = [p for p in pattern.split("/") if p not in ("", ".")]
        if wanted and _prefix_match(parts, wanted):
            return True
    return False


def validate_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """Return the patterns; raise UsageError for an empty one or one with a ``..`` component."""
    result = []
    for pattern in patterns:
        if not pattern.strip() or pattern.strip().strip("/") in ("", "."):
            raise UsageError(f"invalid exclude pattern {pattern!r}: it would leave out everything or nothing")
        if ".." in pattern.split("/"):
            raise UsageError(f"invalid exclude pattern {pattern!r}: '..' is not allowed")
        result.append(pattern)
    return tuple(result)


def split_excludes(values: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split ``backup --exclude`` values into (volume names, path patterns).

    Volume names cannot contain ``/``, so a value with ``/`` is a path pattern (``/cache``,
    ``**/*.log``) and one without is a volume name (globs allowed).
    """
    values = list(values)
    return tuple(v for v in values if "/" not in v), validate_patterns(v for v in values if "/" in v)
