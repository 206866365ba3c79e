"""Finding backups in a backend: list manifests, resolve a REF to one manifest.

A backup exists only once its manifest is stored, and the manifest is written after the archive,
so listing manifests never shows an interrupted backup.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from backup.errors import ManifestError, NotFoundError
from backup.archive.hosts import HostChoice, choose_newest
from backup.archive.manifest import MAX_MANIFEST_SIZE, Manifest, parse_manifest
from backup.archive.naming import BackupId, Ref, backup_id_from_manifest_key
from storage_backends import Backend, NotFound, PermanentError

log = logging.getLogger(__name__)
_PARALLEL_LOADS = 8  # manifests are small; on S3 the round trips dominate


def load_manifest(backend: Backend, backup_id: BackupId) -> Manifest:
    """Return the manifest of ``backup_id``. Raises NotFoundError or ManifestError."""
    from backup.restic import is_repository  # imported late: backup.restic builds on this module

    if is_repository(backend):  # a restic repository answers for its own snapshots
        return backend.resolve(Ref(backup_id.volume, backup_id))
    try:
        with backend.open(backup_id.manifest_key) as f:
            raw = f.read(MAX_MANIFEST_SIZE + 1)  # never all of a huge file: parse_manifest refuses it
    except NotFound:
        raise NotFoundError(f"no backup {backup_id} in {backend.url}") from None
    try:
        manifest = parse_manifest(raw)
    except ManifestError as exc:
        raise ManifestError(f"{backend.url}: manifest of {backup_id}: {exc}") from None
    if manifest.backup_id != backup_id:
        raise ManifestError(f"{backend.url}: manifest stored as {backup_id} describes {manifest.backup_id}")
    return manifest


def list_backups(backend: Backend, volume: str | None = None) -> list[Manifest]:
    """Return the complete backups in ``backend`` (of ``volume`` only, if given), oldest first.

    A manifest that cannot be read or parsed is skipped with one warning on the log that names its
    key (so is one that the backend refuses to read, e.g. a link in a local store): whoever can
    write to the store must not be able to hide the other backups. Raises BackendError if the
    listing fails, and for a transient failure that outlasted the retries.
    """
    from backup.restic import is_repository

    if is_repository(backend):  # its snapshots carry volsafe's manifest data in their tags
        return backend.manifests(volume)
    prefix = f"{volume}/" if volume else ""
    ids = [bid for info in backend.list(prefix) if (bid := backup_id_from_manifest_key(info.key))]
    if volume:
        ids = [bid for bid in ids if bid.volume == volume]

    def load(backup_id: BackupId) -> Manifest | None:
        try:
            return load_manifest(backend, backup_id)
        except (ManifestError, NotFoundError, PermanentError) as exc:
            log.warning("skipping %s: %s", backup_id.manifest_key, exc)
            return None

    with ThreadPoolExecutor(max_workers=_PARALLEL_LOADS) as pool:
        manifests = [m for m in pool.map(load, ids) if m is not None]
    return sorted(manifests, key=lambda m: (m.created, m.backup_id.stamp))


def resolve_ref(backend: Backend, ref: Ref, hosts: HostChoice | None = None) -> Manifest:
    """Return the manifest that ``ref`` names. Raises NotFoundError if there is none.

    With ``hosts``, a volume REF picks among hosts as ``backup.archive.hosts.choose_newest`` says
    (UsageError when that is ambiguous), and an exact id must be from a ``--source-host`` if given.
    """
    if hosts is not None:
        return locate_on_hosts([backend], ref, hosts)[2]
    if ref.backup_id is not None:
        return load_manifest(backend, ref.backup_id)
    backups = list_backups(backend, ref.volume)
    if not backups:
        raise NotFoundError(f"no backups of volume {ref.volume!r} in {backend.url}")
    return backups[-1]


def newest_by_volume(backend: Backend) -> dict[str, BackupId]:
    """Return each volume's newest complete backup in ``backend``, from one listing (no manifest is read).

    The time comes from the id's stamp (UTC, to the second), so this stays one call however many
    backups there are. Raises BackendError if the listing fails.
    """
    newest: dict[str, BackupId] = {}
    for info in backend.list(""):
        backup_id = backup_id_from_manifest_key(info.key)
        if backup_id is None:
            continue
        current = newest.get(backup_id.volume)
        if current is None or backup_id.stamp > current.stamp:  # stamps sort by time
            newest[backup_id.volume] = backup_id
    return newest


@dataclass
class _Candidate:
    """A stored backup not yet read: its id, where it is, and its manifest once read (a restic
    repository gives it with the listing)."""

    backup_id: BackupId
    backend: Backend
    manifest: Manifest | None = None


def _candidates(backends: list[Backend], volume: str | None = None) -> dict[str, list[_Candidate]]:
    """Return volume -> its backups across ``backends``, newest first (by stamp; the first listed
    backend first among equals), from one listing per backend; no manifest is read."""
    from backup.restic import is_repository

    found: dict[str, list[_Candidate]] = {}
    for backend in backends:
        if is_repository(backend):
            for manifest in backend.manifests(volume):
                found.setdefault(manifest.volume, []).append(_Candidate(manifest.backup_id, backend, manifest))
            continue
        for info in backend.list(f"{volume}/" if volume else ""):
            backup_id = backup_id_from_manifest_key(info.key)
            if backup_id is not None and (volume is None or backup_id.volume == volume):
                found.setdefault(backup_id.volume, []).append(_Candidate(backup_id, backend))
    for items in found.values():
        items.sort(key=lambda c: c.backup_id.stamp, reverse=True)  # stable: equal stamps keep backend order
    return found


def _read(candidate: _Candidate) -> Manifest | None:
    """Return the candidate's manifest (read once), or None (with a warning) if it cannot be read."""
    if candidate.manifest is None:
        try:
            candidate.manifest = load_manifest(candidate.backend, candidate.backup_id)
        except (ManifestError, NotFoundError, PermanentError) as exc:
            log.warning("skipping %s: %s", candidate.backup_id.manifest_key, exc)
            return None
    return candidate.manifest


def _newest_where(items: list[_Candidate], fits: Callable[[Manifest], bool]) -> tuple[_Candidate | None, list[_Candidate]]:
    """Walk ``items`` (newest first), reading manifests, until one ``fits``; return the newest that
    fits (by created time among those of the same second) or None, and every candidate read."""
    read: list[_Candidate] = []
    best: _Candidate | None = None
    for candidate in items:
        if best is not None and candidate.backup_id.stamp[:16] != best.backup_id.stamp[:16]:
            break  # older than the second of the first fit: nothing newer can follow
        manifest = _read(candidate)
        if manifest is None:
            continue
        read.append(candidate)
        if fits(manifest) and (best is None or manifest.created > best.manifest.created):  # type: ignore[union-attr]
            best = candidate
    return best, read


def newest_of_host(backend: Backend, volumes: Iterable[str], host: str) -> dict[str, BackupId]:
    """Return, for each of ``volumes`` that has one, its newest complete backup in ``backend`` made
    on ``host``, or recording no host (made before hosts were recorded): what ``volsafe volumes``
    reports for this host. Other hosts' backups of a volume with the same name do not count.

    One listing; then, per volume, manifests are read newest first until one is this host's (so
    usually one read per volume). Raises BackendError if the listing fails.
    """
    wanted = set(volumes)
    found = {volume: items for volume, items in _candidates([backend]).items() if volume in wanted}
    with ThreadPoolExecutor(max_workers=_PARALLEL_LOADS) as pool:
        chosen = dict(zip(found, pool.map(lambda items: _newest_where(items, lambda m: m.source_hostname in (host, ""))[0], found.values()), strict=True))
    return {volume: c.backup_id for volume, c in chosen.items() if c is not None}


def _choose(
    backends: list[Backend], volume: str, items: list[_Candidate], hosts: HostChoice,
    belongs: Callable[[Manifest], bool] | None = None,
) -> tuple[Manifest, Backend] | None:
    """The one REF rule (see ``backup.archive.hosts.choose_newest``) for ``items``, the backups of
    ``volume`` newest first: the newest from a --source-host, else this host's newest; when there
    is none, every manifest of the volume is read to choose among the other hosts.

    With ``belongs`` (e.g. "carries this Compose project"): None when the chosen host's newest
    backup does not belong (the volume is not in the set as that host last backed it up), and
    only backups that belong are considered among other hosts (None when none does).
    """
    where = ", ".join(b.url for b in backends)
    this = None if hosts.selected else hosts.this_host()

    def mine(manifest: Manifest) -> bool:
        if hosts.selected:
            return manifest.source_hostname in hosts.selected
        return this is not None and manifest.source_hostname == this

    best, _ = _newest_where(items, mine)
    if best is not None:
        assert best.manifest is not None
        if belongs is not None and not belongs(best.manifest):
            return None
        return best.manifest, best.backend
    if belongs is not None and hosts.selected:
        return None  # none of the chosen hosts has a backup of this volume: not in their set
    found = [(m, c.backend) for c in items if (m := _read(c)) is not None]
    if belongs is not None and not any(belongs(m) for m, _ in found):
        return None  # no host's backup of it is in the set
    chosen = choose_newest(found, volume, HostChoice(this_host=lambda: this, selected=hosts.selected), where)
    if belongs is not None and not belongs(chosen[0]):
        return None  # the chosen host's newest is not in the set: never an older one that is
    return chosen


def resolve_set(backends: list[Backend], hosts: HostChoice, belongs: Callable[[Manifest], bool]) -> list[tuple[Manifest, Backend]]:
    """Return, by volume name, the backup each stored volume's REF means (``_choose``) among the
    backups that ``belongs`` admits (``restore --project``): one listing per backend, then usually
    one manifest read per volume. Raises UsageError as ``restore VOLUME`` would for a volume whose
    host must be chosen, BackendError if a backend cannot be listed."""
    found = _candidates(backends)
    if not hosts.selected:
        this = hosts.this_host()  # asked once, not once per volume (it may mean a connection to the daemon)
        hosts = HostChoice(this_host=lambda: this)
    with ThreadPoolExecutor(max_workers=_PARALLEL_LOADS) as pool:
        chosen = list(pool.map(lambda v: _choose(backends, v, found[v], hosts, belongs), sorted(found)))
    return [c for c in chosen if c is not None]


def locate(backends: list[Backend], ref: Ref) -> tuple[Backend, Ref]:
    """Return the backend to restore ``ref`` from, and the ref of the exact backup there.

    With one backend that is the backend and ``ref`` (nothing is read). With several: for a
    volume, the backend with its newest backup (the first listed, on a tie); for an exact id, the
    first backend that has it. Raises NotFoundError if none has it.
    """
    if len(backends) == 1:
        return backends[0], ref
    found = []
    for backend in backends:
        try:
            found.append((resolve_ref(backend, ref), backend))
        except NotFoundError:
            continue
    if not found:
        where = ", ".join(b.url for b in backends)
        raise NotFoundError(f"no backup {ref.backup_id} in {where}" if ref.backup_id else f"no backups of volume {ref.volume!r} in {where}")
    manifest, backend = max(found, key=lambda f: (f[0].created, f[0].backup_id.stamp))  # max keeps the first of equals
    return backend, Ref(ref.volume, manifest.backup_id)


def locate_on_hosts(backends: list[Backend], ref: Ref, hosts: HostChoice) -> tuple[Backend, Ref, Manifest]:
    """Return where the backup ``ref`` means is (the backend), its exact ref, and its manifest.

    A volume REF means this host's newest backup of the volume across ``backends``, or as
    ``backup.archive.hosts.choose_newest`` says when this host has none (UsageError if that is
    ambiguous); ``--source-host`` names (``hosts.selected``) restrict it to those hosts. An exact id
    is looked up as ``locate`` does, and must be from a selected host if any are. Raises NotFoundError.
    """
    where = ", ".join(b.url for b in backends)
    if ref.backup_id is not None:
        found = []
        for backend in backends:
            try:
                found.append((load_manifest(backend, ref.backup_id), backend))
            except NotFoundError:
                continue
        if not found:
            raise NotFoundError(f"no backup {ref.backup_id} in {where}")
        manifest, backend = found[0]
        if not hosts.admits(manifest.source_hostname):
            raise NotFoundError(
                f"backup {ref.backup_id} is from host {manifest.source_hostname or '(unrecorded)'}, not {', '.join(hosts.selected)}"
            )
        return backend, ref, manifest
    chosen = _choose(backends, ref.volume, _candidates(backends, ref.volume).get(ref.volume, []), hosts)
    assert chosen is not None  # only with ``belongs`` can there be no choice
    manifest, backend = chosen
    return backend, Ref(ref.volume, manifest.backup_id), manifest
