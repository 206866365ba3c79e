"""Where backups go when the user names a place, and when they do not."""

from __future__ import annotations

import os
from pathlib import Path

from backup.errors import UsageError
from storage_backends import Backend, BackendError, open_backend


def default_location() -> str:
    """Return the default backup directory: ``$XDG_DATA_HOME/volsafe/backups`` (``~/.local/share/…``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home) / "volsafe" / "backups")


def open_locations(locations: list[str] | None) -> list[Backend]:
    """Return a backend for each location (path, file:// or s3:// URL), or the default directory.

    Raises UsageError for a location no backend understands.
    """
    backends = []
    for location in locations or [default_location()]:
        try:
            backends.append(open_backend(location))
        except BackendError as exc:
            raise UsageError(str(exc)) from None
    urls = [b.url for b in backends]
    if len(set(urls)) != len(urls):
        raise UsageError("the same backend is named twice")
    return backends
