"""Where backups go when the user names a place, and when they do not.

A location is a directory path, a ``file://`` or ``s3://`` URL, or the name of a ``[backends.NAME]``
table in the config file. A name that the config does not define stays a (relative) directory path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from backup.errors import UsageError
from storage_backends import Backend, BackendError, open_backend
from storage_backends.registry import create_backend

if TYPE_CHECKING:
    from backup.config.schema import BackendConfig

NamedBackends = Mapping[str, "BackendConfig"]
_BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Set by the CLI's root command: returns the config's [backends] (loading the config on first use,
# so that commands given only paths and URLs never read it).
_named_source: Callable[[], NamedBackends] | None = None


def use_named_backends(source: Callable[[], NamedBackends] | None) -> None:
    """Make ``open_locations`` resolve backend names through ``source()`` (None: names are paths)."""
    global _named_source
    _named_source = source


def default_location() -> str:
    """Return the default backup directory: ``$XDG_DATA_HOME/volsafe/backups`` (``~/.local/share/…``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home) / "volsafe" / "backups")


def open_configured(spec: "BackendConfig") -> Backend:
    """Return the backend a ``[backends.NAME]`` table describes, wrapped in the default retry policy
    like every backend opened by location. Raises BackendError for bad settings."""
    return create_backend(spec.type, spec.settings)


def open_locations(locations: list[str] | None, named: NamedBackends | None = None) -> list[Backend]:
    """Return a backend for each location (backend name, path, file:// or s3:// URL), or the default.

    Names are looked up in ``named`` (default: the config's [backends], if the CLI set one up).
    Raises UsageError for a location no backend understands, or a backend named twice.
    """
    backends = []
    for location in locations or [default_location()]:
        spec = None
        if _BACKEND_NAME.match(location):
            table = named if named is not None else (_named_source() if _named_source else {})
            spec = table.get(location)
        try:
            backends.append(open_configured(spec) if spec is not None else open_backend(location))
        except BackendError as exc:
            raise UsageError(f"backend {location}: {exc}" if spec is not None else str(exc)) from None
    urls = [b.url for b in backends]
    if len(set(urls)) != len(urls):
        raise UsageError("the same backend is named twice")
    return backends
