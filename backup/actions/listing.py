"""``volsafe list``: the complete backups in one or more backends."""

from __future__ import annotations

from dataclasses import dataclass

from backup.archive.catalog import list_backups
from backup.archive.manifest import Manifest
from storage_backends import Backend


@dataclass(frozen=True)
class Listed:
    """One backup as stored on one backend."""

    manifest: Manifest
    backend: Backend


def run_list(backends: list[Backend], volume: str | None = None, hosts: tuple[str, ...] = ()) -> list[Listed]:
    """Return every complete backup (of ``volume``, if given; from ``hosts``, if any are given) on
    each backend (a store or a restic repository), oldest first."""
    rows = [
        Listed(m, b)
        for b in backends
        for m in list_backups(b, volume)  # a store's manifests, or a restic repository's snapshots
        if not hosts or m.source_hostname in hosts
    ]
    return sorted(rows, key=lambda r: (r.manifest.created, str(r.manifest.backup_id), r.backend.url))
