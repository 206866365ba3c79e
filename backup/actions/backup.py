"""``volsafe backup``: stream a volume out of a read-only helper, compress it, store it everywhere."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

from backup import __version__
from backup.archive_codec import DEFAULT_LEVEL, ArchiveStats, compress_tar, encrypted_stored
from backup.consistency import quiesced
from backup.docker_host import DockerHost
from backup.errors import VolsafeError
from backup.fanout import save_to_all
from backup.helper import archive_stream, created_helper
from backup.hooks import HookSpec
from backup.locks import DEFAULT_WAIT, volume_lock
from backup.manifest import Manifest
from backup.naming import BackupId, new_stamp, validate_volume_name
from backup.progress import Reporter
from backup.read_ahead import read_ahead
from storage_backends import Backend, BackendError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupOptions:
    """How to back up: helper image, compression, and how to keep the volume consistent."""

    helper_image: str
    level: int = DEFAULT_LEVEL
    threads: int | None = None  # None: one zstd worker per CPU
    recipients: object | None = None  # backup.encryption.Recipients: age-encrypt the archive for them
    stop_containers: bool = False  # stop the running containers that mount the volume
    pause_containers: bool = False  # pause them instead (wins over stop_containers)
    hooks: tuple[HookSpec, ...] = ()  # besides those declared by container labels
    lock_wait: float = DEFAULT_WAIT  # seconds to wait for another volsafe using the volume

    @property
    def quiesce_mode(self) -> str:
        """Return "pause", "stop" or "none"."""
        return "pause" if self.pause_containers else ("stop" if self.stop_containers else "none")


@dataclass
class VolumeBackup:
    """The outcome of backing up one volume: the manifest, where it was stored, and where it failed."""

    volume: str
    manifest: Manifest | None = None
    stored_on: list[Backend] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # backend url (or "volume") -> one-line reason

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not self.failures


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _then(chunks: Iterable[bytes], at_end: Callable[[], None]) -> Iterator[bytes]:
    """Yield ``chunks``; once they are exhausted (not when cut short), call ``at_end``."""
    yield from chunks
    at_end()


def backup_volume(
    host: DockerHost, volume: str, backends: list[Backend], options: BackupOptions, progress: Reporter
) -> VolumeBackup:
    """Back up one volume to every backend in a single read.

    Returns the outcome; a backup counts on each backend that stored both archive and manifest.
    Raises VolsafeError if the volume cannot be read at all (nothing is stored then), if a pre-hook
    fails, if its containers cannot be stopped or paused, or if another volsafe holds the volume
    longer than ``options.lock_wait``. Containers stopped or paused for the backup are brought back
    as soon as Docker's archive stream ends, and on every other path.
    """
    info = host.volume(validate_volume_name(volume))
    created = datetime.now(timezone.utc)
    backup_id = BackupId(volume, new_stamp(created))
    stats = ArchiveStats()
    outcome = VolumeBackup(volume)

    with volume_lock(host, volume, action="backup", wait=options.lock_wait), quiesced(
        host, volume, mode=options.quiesce_mode, hooks=options.hooks
    ) as quiesce, created_helper(host, options.helper_image, volume, role="backup", writable=False) as helper, archive_stream(
        host, helper
    ) as tar_chunks, progress.task(f"backup {volume}") as advance:
        # The volume is fully read when Docker's stream ends: bring the application back then,
        # while the upload's tail is still being written.
        tar = _then(read_ahead(tar_chunks), quiesce.finish)
        stored = compress_tar(tar, stats, level=options.level, threads=options.threads, progress=advance)
        if options.recipients is not None:
            stored = encrypted_stored(stored, options.recipients, stats)
        results = save_to_all(backends, backup_id.archive_key, stored)
    if quiesce.problems:
        # The archive may well be stored; the run still fails, so that someone looks at the app.
        outcome.failures["volume"] = "after reading the volume: " + "; ".join(quiesce.problems)

    manifest = Manifest(
        backup_id=backup_id,
        created=created,
        volume_labels=info.get("Labels") or {},
        volume_driver=info.get("Driver") or "local",
        volume_driver_opts=info.get("Options") or {},
        source_hostname=host.name,
        source_docker_id=host.daemon_id,
        volsafe_version=__version__,
        tar_size=stats.tar_size,
        stored_size=stats.stored_size,
        sha256=stats.sha256,
        entries=stats.entries,
        compression_level=options.level,
        content_digest=stats.content_digest,
        encryption_recipients=options.recipients.fingerprints if options.recipients is not None else None,
    )
    for result in results:
        if not result.ok:
            outcome.failures[result.backend.url] = _describe(result.error)
            continue
        # The manifest goes last: only now does the backup exist on this backend.
        try:
            result.backend.save(backup_id.manifest_key, [manifest.to_json()])
        except BackendError as exc:
            outcome.failures[result.backend.url] = _describe(exc)
            _remove_quietly(result.backend, backup_id.archive_key)
            continue
        outcome.stored_on.append(result.backend)
    if outcome.stored_on:
        outcome.manifest = manifest
    return outcome


def _remove_quietly(backend: Backend, key: str) -> None:
    """Remove an archive whose manifest could not be written; it would only be dead weight."""
    try:
        backend.remove(key)
    except BackendError as exc:
        log.warning("could not remove orphaned archive %s from %s: %s", key, backend.url, exc)


def run_backup(
    host: DockerHost, volumes: list[str], backends: list[Backend], options: BackupOptions, progress: Reporter
) -> list[VolumeBackup]:
    """Back up each volume in turn; return one outcome per volume, failures included."""
    outcomes = []
    for volume in volumes:
        try:
            outcomes.append(backup_volume(host, volume, backends, options, progress))
        except VolsafeError as exc:
            outcomes.append(VolumeBackup(volume, failures={"volume": str(exc)}))
    return outcomes
