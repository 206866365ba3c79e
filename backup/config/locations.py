"""Where backups go, and where they are looked for: one rule for every command.

A location the user gives (``--to``, ``--from``, ``--via``) is a directory path, a URL of a
registered scheme (``file://``, ``s3://``), or the name of a ``[backends.NAME]`` table of the config
file. A bare word (no ``/``, no scheme, not ``.`` or ``..``) is always a backend name: one the config
does not define is refused, so that a typo never becomes a directory (``./nas`` is the directory).

When none is given, the config's backends are used, all of them, in the order the file lists them;
without any, the default directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from backup.errors import UsageError
from storage_backends import Backend, BackendError, open_backend
from storage_backends.registry import create_backend
from storage_backends.settings import closest

if TYPE_CHECKING:
    from backup.config.schema import BackendConfig

NamedBackends = Mapping[str, "BackendConfig"]


def default_location() -> str:
    """Return the default backup directory: ``$XDG_DATA_HOME/volsafe/backups`` (``~/.local/share/…``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home) / "volsafe" / "backups")


def is_backend_name(location: str) -> bool:
    """Return True if ``location`` can only be a backend name: no ``/`` (so no scheme), not ``.``/``..``."""
    return "/" not in location and location not in (".", "..")


def open_configured(spec: "BackendConfig") -> Backend:
    """Return the backend a ``[backends.NAME]`` table describes, wrapped in the default retry policy
    like every backend opened by location. Raises BackendError for bad settings."""
    return create_backend(spec.type, spec.settings)


def open_locations(locations: list[str] | None, named: NamedBackends) -> list[Backend]:
    """Return a backend for each location (a name from ``named``, a path, or a URL); with none, one
    for each backend of ``named``, or the default directory if ``named`` is empty.

    Raises UsageError for a bare word that names no backend of ``named``, a location no backend
    understands, or a backend named twice.
    """
    if not locations:
        return _configured_or_default(named)
    backends = [_open(location, named) for location in locations]
    urls = [b.url for b in backends]
    if len(set(urls)) != len(urls):
        raise UsageError("the same backend is named twice")
    return backends


def _configured_or_default(named: NamedBackends) -> list[Backend]:
    """Every configured backend, once per place (two tables may name one directory); else the default."""
    if not named:
        return [_open(default_location(), named)]
    backends: dict[str, Backend] = {}
    for name in named:
        backend = _open(name, named)
        if backends.setdefault(backend.url, backend) is not backend:
            backend.close()
    return list(backends.values())


def _open(location: str, named: NamedBackends) -> Backend:
    if not location.strip():
        raise UsageError("an empty backend location was given; name a directory, URL or backend")
    spec = named.get(location) if is_backend_name(location) else None
    if spec is None and is_backend_name(location):
        raise UsageError(f"no backend named {location!r} (use ./{location} for a directory){_hint(location, named)}")
    try:
        return open_configured(spec) if spec is not None else open_backend(location)
    except BackendError as exc:
        raise UsageError(f"backend {location}: {exc}" if spec is not None else str(exc)) from None


def _hint(name: str, named: NamedBackends) -> str:
    close = closest(name, named)
    if close:
        return f"; did you mean {close!r}?"
    return f"; configured: {', '.join(named)}" if named else "; no [backends] are configured"
