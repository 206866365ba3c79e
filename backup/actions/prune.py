"""``volsafe prune``: apply a retention policy to the backups on each backend.

A backup is removed manifest first, archive second: once its manifest is gone it is no longer
listed, so an interrupted prune never leaves a listed backup without its archive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, tzinfo

from backup.archive.catalog import list_backups
from backup.archive.manifest import Manifest
from backup.jobs.retention import Decision, Policy, decide
from backup.restic import is_repository
from backup.restic.actions import prune_repository
from storage_backends import Backend, BackendError, NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    """One backup on one backend: the decision, and whether removing it failed (``error``)."""

    manifest: Manifest
    backend: Backend
    decision: Decision
    removed: bool = False
    error: str | None = None


def remove_backup(backend: Backend, manifest: Manifest) -> None:
    """Remove one backup: its manifest first, then its archive. Raises BackendError.

    An archive already gone is fine; a manifest that cannot be removed leaves the archive alone.
    """
    try:
        backend.remove(manifest.backup_id.manifest_key)
    except NotFound:
        pass
    try:
        backend.remove(manifest.backup_id.archive_key)
    except NotFound:
        pass


def run_prune(
    backends: list[Backend],
    policy: Policy,
    *,
    volumes: list[str] | None = None,
    now: datetime,
    tz: tzinfo | None = None,
    dry_run: bool = False,
) -> list[Pruned]:
    """Apply ``policy`` to each volume's backups (only ``volumes``, if given) on each backend.

    Returns one Pruned per backup seen, newest first per volume; removal failures are recorded in
    ``error`` rather than raised. Lists with BackendError if a backend cannot be listed.
    """
    results: list[Pruned] = []
    for backend in backends:
        if is_repository(backend):  # restic forget + prune, per host and volume: backup.restic
            results += prune_repository(backend, policy, volumes=volumes, now=now, tz=tz, dry_run=dry_run)
            continue
        by_volume: dict[str, list[Manifest]] = {}
        for volume in volumes or [None]:
            for manifest in list_backups(backend, volume):
                by_volume.setdefault(manifest.volume, []).append(manifest)
        for volume in sorted(by_volume):
            manifests = {str(m.backup_id): m for m in by_volume[volume]}
            for decision in decide(manifests.values(), policy, now, tz):
                manifest = manifests[decision.id]
                if decision.keep or dry_run:
                    results.append(Pruned(manifest, backend, decision))
                    continue
                try:
                    remove_backup(backend, manifest)
                except BackendError as exc:
                    log.warning("could not remove %s from %s: %s", decision.id, backend.url, exc)
                    results.append(Pruned(manifest, backend, decision, error=str(exc)))
                    continue
                results.append(Pruned(manifest, backend, decision, removed=True))
    return results
