"""``volsafe delete``: remove backups by exact id, all or nothing as far as finding them goes.

Every id is looked up on every backend first; if any id is on none of them, NotFoundError is
raised and nothing is removed. Then each backup is removed from every backend that has it, the
manifest first and the archive second (as ``prune`` does): once the manifest
is gone the backup is no longer listed, so an interrupted delete never leaves a listed backup
without its archive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backup.archive.catalog import load_manifest
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId
from backup.errors import ManifestError, NotFoundError
from storage_backends import Backend, BackendError, NotFound

log = logging.getLogger(__name__)


@dataclass
class Deletion:
    """One backup on one backend: its manifest (None if it cannot be read) and what became of it."""

    backup_id: BackupId
    backend: Backend
    manifest: Manifest | None
    removed: bool = False
    error: str | None = None


def find_backups(backends: list[Backend], ids: list[BackupId]) -> list[Deletion]:
    """Return one Deletion for each backend that holds each id (ids in order given, backends in order).

    A backup exists where its manifest is stored; a manifest that cannot be parsed still counts
    (so a damaged backup can be deleted), with ``manifest`` None. Raises NotFoundError naming
    every id that no backend holds, BackendError if a backend cannot be asked.
    """
    found: list[Deletion] = []
    missing: list[str] = []
    for backup_id in ids:
        here = []
        for backend in backends:
            try:
                backend.stat(backup_id.manifest_key)
            except NotFound:
                continue
            try:
                manifest = load_manifest(backend, backup_id)
            except (ManifestError, NotFoundError) as exc:
                log.warning("%s", exc)
                manifest = None
            here.append(Deletion(backup_id, backend, manifest))
        if not here:
            missing.append(str(backup_id))
        found += here
    if missing:
        where = ", ".join(b.url for b in backends)
        raise NotFoundError(f"no backup {', '.join(missing)} in {where}; nothing was deleted")
    return found


def run_delete(backends: list[Backend], ids: list[BackupId], *, dry_run: bool = False) -> list[Deletion]:
    """Delete each backup in ``ids`` from every backend in ``backends`` that holds it.

    Raises NotFoundError, before anything is removed, when an id is on none of the backends.
    Returns one Deletion per backup and backend; a removal that fails is recorded in ``error``
    (the other removals go ahead). With ``dry_run`` nothing is removed.
    """
    deletions = find_backups(backends, list(dict.fromkeys(ids)))  # an id given twice is deleted once
    if dry_run:
        return deletions
    for deletion in deletions:
        try:
            _remove(deletion.backend, deletion.backup_id)
        except BackendError as exc:
            log.warning("could not delete %s from %s: %s", deletion.backup_id, deletion.backend.url, exc)
            deletion.error = str(exc)
            continue
        deletion.removed = True
    return deletions


def _remove(backend: Backend, backup_id: BackupId) -> None:
    """Remove the manifest, then the archive (already gone is fine). Raises BackendError; a manifest
    that cannot be removed leaves the archive alone."""
    for key in (backup_id.manifest_key, backup_id.archive_key):
        try:
            backend.remove(key)
        except NotFound:
            pass
