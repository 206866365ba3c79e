"""``volsafe restore``: stream a stored archive through a helper into a volume, all or nothing.

The archive is extracted into a hidden staging directory inside the target volume while volsafe
checks it against its manifest; only when every check passed are the staged entries swapped in
(``backup.staging``, shared with ``migrate``). On any failure a volume that restore created is
removed, and an existing volume (``--force``) keeps its old contents.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

from backup.archive_codec import verified_tar
from backup.catalog import resolve_ref
from backup.docker_host import DockerHost
from backup.encryption import decryptor, require_keys
from backup.errors import NotFoundError
from backup.locks import volume_lock
from backup.manifest import Manifest
from backup.naming import Ref, validate_volume_name
from backup.progress import Reporter
from backup.read_ahead import read_ahead
from backup.staging import SPOOL_LIMIT, StagedTarget, check_target, create_volume, staged_target
from storage_backends import Backend, NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreOutcome:
    """What was restored where."""

    manifest: Manifest
    volume: str
    created_volume: bool
    backend: Backend


def _stream_into_staging(
    target: StagedTarget, manifest: Manifest, backend: Backend, raw_headers, progress: Reporter, identities: list | None = None
) -> None:
    """Extract the verified archive into the staging directory. Raises on any mismatch or tar error,
    and HostileArchiveError for an entry that would escape the target (before tar sees it)."""
    try:
        stored = backend.open(manifest.backup_id.archive_key)
    except NotFound:
        raise NotFoundError(f"archive of {manifest.backup_id} is missing from {backend.url}") from None
    with stored, progress.task(f"restore {target.volume}", total=manifest.stored_size) as advance:
        tar_chunks = verified_tar(
            stored,
            expected_sha256=manifest.sha256,
            expected_size=manifest.stored_size,
            expected_entries=manifest.entries,
            expected_content_digest=manifest.content_digest,
            metadata_sink=raw_headers,
            refuse_hostile=True,
            decrypt=decryptor(manifest, identities),
            progress=advance,
        )
        target.extract(read_ahead(tar_chunks))


def run_restore(
    host: DockerHost,
    backend: Backend,
    ref: Ref,
    *,
    helper_image: str,
    to_volume: str | None = None,
    force: bool = False,
    progress: Reporter,
    identities: list | None = None,
) -> RestoreOutcome:
    """Restore the backup ``ref`` names into ``to_volume`` (default: its own volume name).

    Returns the outcome. Raises NotFoundError for an unknown backup, TargetNotEmpty for a volume
    that has data and no ``force``, IntegrityError for a corrupt archive; in every failure case the
    target is left as it was. ``identities`` (age/SSH) decrypt an encrypted archive: without a
    matching one, EncryptionError is raised before the target volume is touched.
    """
    manifest = resolve_ref(backend, ref)
    volume = validate_volume_name(to_volume or manifest.volume)
    require_keys(backend, manifest, identities)
    # Never while another volsafe backs up or restores the same volume on this daemon.
    with volume_lock(host, volume, action="restore"):
        exists = check_target(host, helper_image, volume, force=force)
        if not exists:
            create_volume(
                host, volume, driver=manifest.volume_driver, driver_opts=manifest.volume_driver_opts, labels=manifest.volume_labels
            )
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT) as raw_headers, staged_target(
            host, helper_image, volume, created=not exists, role="restore", action="restore"
        ) as target:
            _stream_into_staging(target, manifest, backend, raw_headers, progress, identities)
            target.commit(raw_headers)
    return RestoreOutcome(manifest, volume, created_volume=not exists, backend=backend)
