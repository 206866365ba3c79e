"""``volsafe restore``: stream a stored archive through a helper into a volume, all or nothing.

The archive is extracted by busybox tar into a hidden staging directory inside the target volume
while volsafe checks it against its manifest. Only when every check passed are the staged entries
swapped in with renames. On any failure a volume that restore created is removed, and an existing
volume (``--force``) keeps its old contents.

busybox tar restores owners, modes, links and special files, but sets the mtime of a directory
before it fills it and never sets a symlink's mtime. So the headers of directories and symlinks are
kept aside while streaming, and re-applied at the end through Docker's archive endpoint, which sets
them last.
"""

from __future__ import annotations

import io
import logging
import secrets
import tarfile
import tempfile
from dataclasses import dataclass

from backup.archive_codec import verified_tar
from backup.catalog import resolve_ref
from backup.docker_host import DockerHost, docker_errors
from backup.errors import NotFoundError, TargetNotEmpty, VolsafeError
from backup.helper import MOUNT_PARENT, MOUNT_POINT, HelperSession, helper_session, run_helper
from backup.manifest import Manifest
from backup.naming import Ref, validate_volume_name
from backup.progress import Reporter
from backup.read_ahead import read_ahead
from storage_backends import Backend, NotFound

log = logging.getLogger(__name__)

STAGING_PREFIX = ".volsafe-restore-"
OLD_PREFIX = ".volsafe-old-"
_SPOOL_LIMIT = 8 << 20  # directory and symlink headers beyond this spill to a temporary file

# Leftovers of an interrupted restore are not user data: they do not make a volume "not empty".
PROBE_SCRIPT = f"""
find {MOUNT_POINT} -mindepth 1 -maxdepth 1 ! -name '{STAGING_PREFIX}*' ! -name '{OLD_PREFIX}*' | head -n 1
"""
EXTRACT_SCRIPT = f"""
set -eu
mkdir "{MOUNT_POINT}/$1"
exec tar -x -f - -C "{MOUNT_POINT}/$1"
"""
# Move the old contents aside, move the staged ones in, and only then delete the old ones. Earlier
# leftovers (other staging or old directories) are swept out with the old contents.
COMMIT_SCRIPT = f"""
set -eu
t={MOUNT_POINT}
old="{OLD_PREFIX}$2"
mkdir "$t/$old"
find "$t" -mindepth 1 -maxdepth 1 ! -name "$1" ! -name "$old" -exec mv -f {{}} "$t/$old/" \\;
find "$t/$1" -mindepth 1 -maxdepth 1 -exec mv -f {{}} "$t/" \\;
rmdir "$t/$1"
rm -rf "$t/$old"
"""
# Also puts back the root's mtime, which creating and removing the staging directory changed.
DISCARD_SCRIPT = f"""
rm -rf "{MOUNT_POINT}/$1" && touch -c -d "@$2" {MOUNT_POINT}
"""


@dataclass(frozen=True)
class RestoreOutcome:
    """What was restored where."""

    manifest: Manifest
    volume: str
    created_volume: bool
    backend: Backend


def _is_empty(host: DockerHost, image: str, volume: str) -> bool:
    result = run_helper(host, image, volume, ["sh", "-c", PROBE_SCRIPT], role="probe", writable=False)
    if result.exit_code != 0:
        raise VolsafeError(f"cannot inspect volume {volume!r}: {result.last_line()}")
    return result.output.strip() == ""


def _metadata_tar(raw_headers, target_name: str) -> tempfile.SpooledTemporaryFile:
    """Return a tar of the kept directory and symlink headers, renamed under ``target_name``.

    Entry ``.`` becomes ``target_name`` itself, so the volume root gets its owner, mode and mtime.
    """
    raw_headers.write(bytes(1024))  # end-of-archive marker
    raw_headers.seek(0)
    out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT)
    with tarfile.open(fileobj=raw_headers, mode="r|") as src, tarfile.open(
        fileobj=out, mode="w|", format=tarfile.PAX_FORMAT
    ) as dst:
        for member in src:
            relative = member.name[2:] if member.name.startswith("./") else member.name
            member.name = target_name if relative in (".", "") else f"{target_name}/{relative}"
            # tarfile writes a member's old pax records over its attributes; let it derive fresh ones.
            member.pax_headers = {}
            dst.addfile(member)
    out.seek(0)
    return out


def _stream_into_staging(
    helper: HelperSession, volume: str, staging: str, manifest: Manifest, backend: Backend, raw_headers, progress: Reporter
) -> None:
    """Extract the verified archive into the staging directory. Raises on any mismatch or tar error."""
    try:
        stored = backend.open(manifest.backup_id.archive_key)
    except NotFound:
        raise NotFoundError(f"archive of {manifest.backup_id} is missing from {backend.url}") from None
    with stored, progress.task(f"restore {volume}", total=manifest.stored_size) as advance:
        tar_chunks = verified_tar(
            stored,
            expected_sha256=manifest.sha256,
            expected_size=manifest.stored_size,
            expected_entries=manifest.entries,
            metadata_sink=raw_headers,
            progress=advance,
        )
        result = helper.exec(["sh", "-c", EXTRACT_SCRIPT, "sh", staging], stdin=read_ahead(tar_chunks))
    if result.exit_code != 0:
        raise VolsafeError(f"restore into {volume!r} failed: tar in the helper exited {result.exit_code}: {result.last_line()}")


def _commit(helper: HelperSession, volume: str, staging: str, token: str, raw_headers) -> None:
    """Swap the staged tree in, then apply directory and symlink metadata. Raises VolsafeError."""
    result = helper.exec(["sh", "-c", COMMIT_SCRIPT, "sh", staging, token])
    if result.exit_code != 0:
        raise VolsafeError(f"could not swap the restored data into {volume!r}: {result.last_line()}")
    with _metadata_tar(raw_headers, MOUNT_POINT.rsplit("/", 1)[1]) as metadata:
        helper.put_archive(MOUNT_PARENT, metadata)


def _root_mtime(helper: HelperSession) -> str:
    """Return the volume root's mtime in seconds, as text. Raises VolsafeError."""
    result = helper.exec(["stat", "-c", "%Y", MOUNT_POINT])
    if result.exit_code != 0 or not result.output.strip().isdigit():
        raise VolsafeError(f"cannot inspect the target volume: {result.last_line()}")
    return result.output.strip()


def _discard_staging(helper: HelperSession, volume: str, staging: str, root_mtime: str) -> None:
    """Remove the staging directory of a failed restore into an existing volume."""
    try:
        result = helper.exec(["sh", "-c", DISCARD_SCRIPT, "sh", staging, root_mtime])
        if result.exit_code != 0:
            log.error("could not remove %s from %s: %s", staging, volume, result.last_line())
    except VolsafeError as exc:
        log.error("could not remove %s from %s: %s", staging, volume, exc)


def _remove_volume(host: DockerHost, volume: str) -> None:
    """Remove a volume that a failed restore created."""
    try:
        with docker_errors(host):
            host.api.remove_volume(volume, force=True)
    except VolsafeError as exc:
        log.error("could not remove volume %s after the failed restore: %s", volume, exc)


def run_restore(
    host: DockerHost,
    backend: Backend,
    ref: Ref,
    *,
    helper_image: str,
    to_volume: str | None = None,
    force: bool = False,
    progress: Reporter,
) -> RestoreOutcome:
    """Restore the backup ``ref`` names into ``to_volume`` (default: its own volume name).

    Returns the outcome. Raises NotFoundError for an unknown backup, TargetNotEmpty for a volume
    that has data and no ``force``, IntegrityError for a corrupt archive; in every failure case the
    target is left as it was.
    """
    manifest = resolve_ref(backend, ref)
    volume = validate_volume_name(to_volume or manifest.volume)
    exists = host.volume_exists(volume)
    if exists and not force and not _is_empty(host, helper_image, volume):
        raise TargetNotEmpty(f"volume {volume!r} exists and is not empty; use --force to replace its contents")
    if not exists:
        with docker_errors(host):
            host.api.create_volume(
                volume, driver=manifest.volume_driver, driver_opts=manifest.volume_driver_opts or None, labels=manifest.volume_labels or None
            )
    token = secrets.token_hex(6)
    staging = f"{STAGING_PREFIX}{token}"
    try:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT) as raw_headers, helper_session(
            host, helper_image, volume, role="restore", writable=True
        ) as helper:
            root_mtime = _root_mtime(helper) if exists else ""
            try:
                _stream_into_staging(helper, volume, staging, manifest, backend, raw_headers, progress)
                _commit(helper, volume, staging, token, raw_headers)
            except BaseException:
                if exists:
                    _discard_staging(helper, volume, staging, root_mtime)
                raise
    except BaseException:
        if not exists:
            _remove_volume(host, volume)  # only once the helper that mounts it is gone
        raise
    return RestoreOutcome(manifest, volume, created_volume=not exists, backend=backend)
