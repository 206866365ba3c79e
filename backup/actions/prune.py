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
    hosts: tuple[str, ...] | None = None,
) -> list[Pruned]:
    """Apply ``policy`` to each host's backups of each volume (only ``volumes``, if given; only
    those from ``hosts``, if given: None means every host, and backups that record none) on each
    backend. One host's backups never count towards another's retention.

    Returns one Pruned per backup seen, newest first per host and volume; removal failures are
    recorded in ``error`` rather than raised. Lists with BackendError if a backend cannot be listed.
    """
    results: list[Pruned] = []
    for backend in backends:
        if is_repository(backend):  # restic forget + prune, per host and volume: backup.restic
            results += prune_repository(backend, policy, volumes=volumes, now=now, tz=tz, dry_run=dry_run, hosts=hosts)
            continue
        by_volume: dict[tuple[str, str], list[Manifest]] = {}
        for volume in volumes if volumes else [None]:
            for manifest in list_backups(backend, volume):
                if hosts is None or manifest.source_hostname in hosts:
                    by_volume.setdefault((manifest.volume, manifest.source_hostname), []).append(manifest)
        for group in sorted(by_volume):
            manifests = {str(m.backup_id): m for m in by_volume[group]}
            for decision in decide(manifests.values(), policy, now, tz):
                manifest = manifests[decision.id]
                if not decision.counted:
                    log.warning(
                        "%s on %s claims to be created at %s, in the future: kept, but not counted by any keep rule",
                        decision.id, backend.url, manifest.created.isoformat(),
                    )
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
