"""``volsafe verify``: check stored backups against their manifests, optionally by restoring them.

Without Docker, each archive is read once, as restore would read it: it must exist with the
manifest's size and sha256, be one complete zstd stream holding a complete tar with the manifest's
entry count and content digest, and hold no entry that a restore would refuse. With a restore test,
it is also restored into a scratch volume through a helper container, the restored tree is read back
through Docker's archive endpoint and its digest compared with the recorded one; the scratch volume
is removed on every path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Callable

from backup.archive.codec import READ_SIZE, checked_backup_tar, tree_digest
from backup.archive.catalog import list_backups, load_manifest, resolve_ref
from backup.archive.hosts import HostChoice
from backup.docker.host import DockerHost
from backup.crypto.encryption import decryptor, has_key_for, require_keys
from backup.errors import IntegrityError, NotFoundError, VolsafeError
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, Ref, backup_id_from_archive_key, backup_id_from_manifest_key
from backup.progress import Reporter
from backup.streams.read_ahead import read_ahead
from backup.docker.staging import remove_volume
from backup.docker.volume_tar import volume_tar
from backup.restic import is_repository
from backup.restic.actions import verify_repository
from storage_backends import Backend, BackendError, NotFound

log = logging.getLogger(__name__)
SCRATCH_PREFIX = "volsafe-verify-"


@dataclass
class Verified:
    """The verdict on one backup on one backend: ``error`` is None when every check passed."""

    backup_id: BackupId
    backend: Backend
    checks: list[str] = field(default_factory=list)  # what passed, in order
    error: str | None = None
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def find_backups(backend: Backend, volume: str | None = None) -> list[tuple[BackupId, bool, bool]]:
    """Return (id, has manifest, has archive) for every backup id with either object stored, by id.

    Raises BackendError if the backend cannot be listed.
    """
    found: dict[BackupId, list[bool]] = {}
    for info in backend.list(f"{volume}/" if volume else ""):
        for index, parse in enumerate((backup_id_from_manifest_key, backup_id_from_archive_key)):
            backup_id = parse(info.key)
            if backup_id is not None and (volume is None or backup_id.volume == volume):
                found.setdefault(backup_id, [False, False])[index] = True
    return sorted(((bid, m, a) for bid, (m, a) in found.items()), key=lambda t: (t[0].volume, t[0].stamp))


def _hash_only(backend: Backend, manifest: Manifest, progress: Reporter) -> None:
    """Check size and sha256 of an archive that cannot be decrypted here. Raises IntegrityError."""
    digest, size = hashlib.sha256(), 0
    with backend.open(manifest.backup_id.archive_key) as stored, progress.task(
        f"verify {manifest.backup_id}", total=manifest.stored_size
    ) as advance:
        while chunk := stored.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
            advance(len(chunk))
    if size != manifest.stored_size:
        raise IntegrityError(f"archive is {size} bytes, but its manifest says {manifest.stored_size}")
    if digest.hexdigest() != manifest.sha256:
        raise IntegrityError("archive checksum does not match its manifest (sha256 mismatch)")


def check_archive(backend: Backend, manifest: Manifest, identities: list | None, progress: Reporter) -> list[str]:
    """Read the archive of ``manifest`` through every check; return the names of the checks passed.

    Raises IntegrityError (or HostileArchiveError, EncryptionError, NotFoundError) on the first
    failed check. An encrypted archive without a key of its kind (identities, or a passphrase) gets
    its size and sha256 checked only.
    """
    try:
        info = backend.stat(manifest.backup_id.archive_key)
    except NotFound:
        raise NotFoundError("archive is missing") from None
    if info.size != manifest.stored_size:
        raise IntegrityError(f"archive is {info.size} bytes, but its manifest says {manifest.stored_size}")
    if manifest.encrypted and not has_key_for(manifest, identities):
        _hash_only(backend, manifest, progress)
        needed = "--passphrase-file or VOLSAFE_PASSPHRASE" if manifest.encryption_passphrase else "--identity"
        return ["size", "sha256", f"encrypted: contents not checked without {needed}"]
    manifest = require_keys(backend, manifest, identities)  # opens an encrypted manifest's sealed fields
    with backend.open(manifest.backup_id.archive_key) as stored, progress.task(
        f"verify {manifest.backup_id}", total=manifest.stored_size
    ) as advance:
        # The checks alone: restore re-emits the same decided entries, which cannot fail differently.
        for _chunk in checked_backup_tar(stored, manifest, decrypt=decryptor(manifest, identities), progress=advance, canonical=False):
            pass
    checks = ["size", "sha256"] + (["age"] if manifest.encrypted else []) + ["zstd", f"tar ({manifest.entries} entries)"]
    return checks + (["content digest"] if manifest.content_digest else ["no content digest recorded"])


def restore_test(
    host: DockerHost, helper_image: str, backend: Backend, manifest: Manifest, identities: list | None, progress: Reporter
) -> None:
    """Restore ``manifest``'s backup into a scratch volume and compare the restored tree's digest.

    The scratch volume is always a plain one (default driver, no options, no labels), whatever
    the manifest records: a verify never writes anywhere but into a volume of its own.

    The scratch volume is removed on every path. Raises IntegrityError if the tree differs, and
    whatever restore raises.
    """
    from backup.actions.restore import run_restore  # restore pulls in the staging machinery

    scratch = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    try:
        restored = run_restore(
            host, backend, Ref(manifest.volume, manifest.backup_id), helper_image=helper_image,
            to_volume=scratch, progress=progress, identities=identities, scratch=True,
        )
        manifest = restored.manifest  # with an encrypted manifest's sealed fields opened
        with volume_tar(host, helper_image, scratch, role="verify") as tar_chunks:
            with contextlib.closing(read_ahead(tar_chunks)) as ahead:  # read while the last piece is scanned
                digest, entries = tree_digest(ahead)
    finally:
        if host.volume_exists(scratch):
            remove_volume(host, scratch)
    if manifest.compression == "restic":
        return  # restic restored it and checked its blobs; volsafe records no digest of restic snapshots
    if entries != manifest.entries:
        raise IntegrityError(f"restored tree holds {entries} entries, but the manifest says {manifest.entries}")
    if manifest.content_digest and digest != manifest.content_digest:
        raise IntegrityError("restored tree's digest differs from the one recorded at backup time")


def verify_one(
    backend: Backend,
    backup_id: BackupId,
    *,
    identities: list | None,
    progress: Reporter,
    restore_with: Callable[[Manifest], None] | None = None,
) -> Verified:
    """Return the verdict on one backup; every failure is in ``error`` (nothing is raised but
    Cancelled). ``restore_with``, if given, runs the restore test on a backup that passed."""
    verdict = Verified(backup_id, backend)
    try:
        verdict.manifest = load_manifest(backend, backup_id)
        verdict.checks = check_archive(backend, verdict.manifest, identities, progress)
        if restore_with is not None:
            restore_with(verdict.manifest)
            verdict.checks.append("restore test")
    except NotFoundError as exc:
        verdict.error = str(exc) if verdict.manifest is not None else _missing_manifest(backend, backup_id)
    except VolsafeError as exc:  # a BackendError too
        verdict.error = str(exc) or type(exc).__name__
    return verdict


def _missing_manifest(backend: Backend, backup_id: BackupId) -> str:
    """Return why a backup without a manifest fails: its archive is there alone, or nothing is."""
    try:
        backend.stat(backup_id.archive_key)
    except BackendError:
        return "no such backup (neither manifest nor archive is stored)"
    return "manifest is missing (the archive is there)"


def run_verify(
    backends: list[Backend],
    refs: list[Ref] | None,
    *,
    identities: list | None = None,
    progress: Reporter,
    restore_test_with: Callable[[Backend, Manifest], None] | None = None,
    hosts: HostChoice | None = None,
) -> list[Verified]:
    """Verify the backups ``refs`` name on each backend, or (``refs`` None) every backup there.

    Returns one verdict per backup and backend. With every backup, an archive without a manifest
    and a manifest without an archive are failures too. Raises NotFoundError for a REF that names
    nothing, BackendError if a backend cannot be listed.

    ``hosts``: a volume REF means this host's newest backup (``backup.archive.hosts``); with
    ``--source-host`` names, every backup verified is from those hosts (with ``refs`` None, archives
    without a manifest, whose host is unknown, are then left out).
    """
    verdicts = []
    selected = hosts.selected if hosts is not None else ()
    for backend in backends:
        restore_with = (lambda m, b=backend: restore_test_with(b, m)) if restore_test_with else None
        if is_repository(backend):  # restic check, the snapshots, restore tests: backup.restic
            verdicts += verify_repository(backend, refs, progress, restore_with)
            continue
        if refs is None:
            targets = []
            admitted = {m.backup_id for m in list_backups(backend) if m.source_hostname in selected} if selected else None
            for backup_id, has_manifest, _has_archive in find_backups(backend):
                if admitted is not None:
                    if backup_id in admitted:
                        targets.append(backup_id)
                elif not has_manifest:
                    verdicts.append(Verified(backup_id, backend, error="manifest is missing (the archive is there)"))
                else:
                    targets.append(backup_id)
        else:
            targets = [_resolve(backend, ref, hosts) for ref in refs]
        verdicts += [
            verify_one(backend, backup_id, identities=identities, progress=progress, restore_with=restore_with)
            for backup_id in targets
        ]
    return verdicts


def _resolve(backend: Backend, ref: Ref, hosts: HostChoice | None = None) -> BackupId:
    """Return the id ``ref`` names: an exact id as given (its manifest may be the thing missing),
    else the newest backup of the volume (among hosts as ``hosts`` says). Raises NotFoundError."""
    return ref.backup_id if ref.backup_id is not None else resolve_ref(backend, ref, hosts).backup_id


VERIFY_SUFFIX = ":verify"  # a job's verify runs are recorded as "JOB:verify" (":" is never in a job name)


def run_verify_job(host: DockerHost, job, backends: list[Backend], helper_image: str, identities: list | None, progress: Reporter, outcome=None):
    """Verify every backup of a job's volumes on its backends (those of other hosts sharing the
    store are theirs to verify); with ``verify_restore_test``, also restore-test the newest backup
    of each volume on each backend.

    A backend that holds nothing at all (a missing or empty directory: an unmounted disk) is a
    failure; a volume without backups yet (a job's first run still to come) is not.

    Returns a JobOutcome named ``JOB:verify`` (failures in ``errors``, never raised but Cancelled),
    which the scheduler records like a backup run: status file, /health, /metrics, webhook.
    """
    import time
    from datetime import datetime, timezone

    from backup.actions.job import JobOutcome, host_name_of, select_volumes

    outcome = outcome or JobOutcome(job.name + VERIFY_SUFFIX, datetime.now(timezone.utc))
    clock = time.monotonic()
    outcome.backends = [b.url for b in backends]
    try:
        outcome.host = host_name_of(host)
        outcome.volumes = select_volumes(host, job)
        for backend in backends:
            # An unmounted NAS must not verify as fine; stop at the first object (a store may be large).
            if outcome.volumes and next(iter(backend.list("")), None) is None:
                outcome.errors.append(f"no backups found in {backend.url}")
                continue
            for volume in outcome.volumes:
                found = [bid for bid, _m, _a in find_backups(backend, volume)]
                if outcome.host:  # other hosts sharing the store verify their own backups
                    theirs = {m.backup_id for m in list_backups(backend, volume) if m.source_hostname not in ("", outcome.host)}
                    found = [bid for bid in found if bid not in theirs]
                for backup_id in found:
                    newest = backup_id == found[-1]
                    test = (lambda m, b=backend: restore_test(host, helper_image, b, m, identities, progress)) if (
                        job.verify_restore_test and newest
                    ) else None
                    verdict = verify_one(backend, backup_id, identities=identities, progress=progress, restore_with=test)
                    if not verdict.ok:
                        outcome.errors.append(f"{backup_id} on {backend.url}: {verdict.error}")
                    elif verdict.manifest is not None:
                        outcome.bytes += verdict.manifest.stored_size
    except VolsafeError as exc:  # a BackendError too
        outcome.errors.append(str(exc) or type(exc).__name__)
    finally:
        outcome.finished = datetime.now(timezone.utc)
        outcome.duration = time.monotonic() - clock
    return outcome
