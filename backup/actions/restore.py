"""``volsafe restore``: stream a stored archive through a helper into a volume, all or nothing.

The archive is extracted into a hidden staging directory inside the target volume while volsafe
checks it against its manifest; only when every check passed are the staged entries swapped in
(``backup.docker.staging``, shared with ``migrate``). On any failure a volume that restore created is
removed, and an existing volume (``--force``) keeps its old contents.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, cast

from backup.archive.codec import checked_backup_tar
from backup.archive.catalog import resolve_ref
from backup.docker.host import DockerHost
from backup.crypto.encryption import decryptor, require_keys
from backup.docker.container_tar import ContainerSession
from backup.docker.host import docker_errors
from backup.errors import NotFoundError, TargetInUse, TargetNotEmpty, UsageError, VolsafeError
from backup.docker.locks import volume_lock
from backup.archive.manifest import Manifest
from backup.archive.naming import Ref, validate_volume_name
from backup.progress import Reporter
from backup.quiesce.containers import containers_using
from backup.quiesce.session import QuiesceSession
from backup.streams.deferred_close import DeferredClose
from backup.streams.read_ahead import read_ahead
from backup.docker.staging import (
    DEFAULT_DRIVER,
    SPOOL_LIMIT,
    StagedTarget,
    check_target,
    check_write_location,
    container_path_empty,
    create_volume,
    describe_driver,
    is_empty,
    remove_volume,
    require_named_device,
    staged_in_container,
    staged_target,
    write_record,
)
from backup.restic import is_repository
from backup.restic.actions import dump_tar as restic_dump_tar, extract_into_staging as restic_extract
from backup.restic.helper import require_local, restic_mounts
from storage_backends import Backend, NotFound

log = logging.getLogger(__name__)
told = logging.getLogger("volsafe.volumes")  # shown on stderr: how a volume is created


@dataclass(frozen=True)
class RestoreOutcome:
    """What was restored where."""

    manifest: Manifest
    volume: str  # the target: a volume name, a directory (--to-path) or CONTAINER:PATH (--to-container)
    created_volume: bool
    backend: Backend
    target_kind: str = "volume"  # "volume", "path" or "container"


def _stream_into_staging(
    target: StagedTarget, manifest: Manifest, backend: Backend, raw_headers, progress: Reporter, identities: list | None = None
) -> None:
    """Extract the verified archive into the staging directory. Raises on any mismatch or tar error,
    and HostileArchiveError for an entry that would escape the target (before tar sees it)."""
    try:
        # Read in the read-ahead thread: closing it on SIGTERM must not wait for a read a stalled store holds up.
        stored = cast(BinaryIO, DeferredClose(backend.open(manifest.backup_id.archive_key)))  # read() is all the checks use
    except NotFound:
        raise NotFoundError(f"archive of {manifest.backup_id} is missing from {backend.url}") from None
    with stored, progress.task(f"restore {target.volume}", total=manifest.stored_size) as advance:
        tar_chunks = checked_backup_tar(
            stored, manifest, decrypt=decryptor(manifest, identities), metadata_sink=raw_headers, progress=advance
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
    to_path: str | None = None,
    to_container: tuple[str, str] | None = None,
    driver_opts: bool = False,
    bind_devices: tuple[str, ...] | list[str] = (),
    create_as: tuple[str, dict] | None = None,
    scratch: bool = False,
    quiesce: str = "none",
    session: QuiesceSession | None = None,
    keep_compose_labels: bool = False,
    manifest: Manifest | None = None,
) -> RestoreOutcome:
    """Restore the backup ``ref`` names into ``to_volume`` (default: its own volume name).

    ``manifest`` is ``ref``'s manifest when the caller has just read it (the CLI, choosing among
    hosts): not read again (from a restic repository that is one more ``restic snapshots``, about
    0.6 s of key derivation).

    Returns the outcome. Raises NotFoundError for an unknown backup, TargetNotEmpty for a volume
    that has data and no ``force``, IntegrityError for a corrupt archive; in every failure case the
    target is left as it was. ``identities`` (age/SSH, or a Passphrase) decrypt an encrypted archive: without a
    matching one, EncryptionError is raised before the target volume is touched.

    ``to_path`` (a directory on the daemon's host, which must exist) or ``to_container`` (a running
    container and a path in it) are the other targets, with the same checks and staging. A backup
    of a bind or tmpfs mount needs an explicit target (UsageError otherwise).

    A volume that does not exist is created with the default driver and no driver options: the
    manifest's are used only with ``driver_opts``, and (``create_as``) migrate's live source's
    instead. ``scratch`` (verify --restore-test) creates a plain volume with no labels either. A
    volume that would keep its data on a host device (``o=bind``, ``device=``) needs that device in
    ``bind_devices`` (--bind-device), and no volume is written where another keeps its data:
    UnsafeTarget otherwise, before anything is created or written.

    An existing volume that a running container mounts is written only while ``quiesce`` ("stop"
    or "pause") holds those containers still (brought back on every path, with a crash record), or
    inside ``session``, a caller's started QuiesceSession covering it: TargetInUse otherwise.

    A new volume gets the backup's labels, except that Compose's (``com.docker.compose.*``) are
    left out when the name differs from the backed-up volume's, unless ``keep_compose_labels``:
    a renamed copy must not join the project.
    """
    repository = is_repository(backend)  # a restic repository: restic restores into the staging directory
    if manifest is None:
        manifest = resolve_ref(backend, ref)  # the catalog answers for a store's manifests and a repository's snapshots
    mount = manifest.mount or {}
    kind = mount.get("type", "volume")
    if kind != "volume" and not (to_volume or to_path or to_container):
        raise UsageError(
            f"{manifest.backup_id} is a backup of a {kind} mount ({mount.get('destination')} in container "
            f"{mount.get('container')}): give --to-volume NAME, --to-path DIR or --to-container NAME:PATH"
        )
    if repository and (to_path is not None or to_container is not None):
        raise UsageError(f"{backend.url}: a restic snapshot is restored into a volume (--to-volume), not --to-path or --to-container")
    # restic in the helper beside the staging directory (a snapshot of the volume's files), or on
    # this host dumping a streamed snapshot's tar: checked now, the cache volume made only to write.
    in_helper = is_repository(backend) and manifest.extra.get("restic_mode") != "stream"
    if is_repository(backend) and in_helper:
        require_local(host, backend)
    extra_mounts = (lambda: restic_mounts(host, backend)) if is_repository(backend) and in_helper else (lambda: ())
    if not repository:
        manifest = require_keys(backend, manifest, identities)  # opens an encrypted manifest's sealed fields
    if to_path is not None:
        return _restore_to_path(host, backend, manifest, to_path, helper_image, force, progress, identities)
    if to_container is not None:
        return _restore_to_container(host, backend, manifest, to_container, force, progress, identities)
    if to_volume == "":
        raise UsageError("--to-volume must not be empty")
    volume = validate_volume_name(to_volume or manifest.volume)
    # Never while another volsafe backs up or restores the same volume on this daemon.
    with volume_lock(host, volume, action="restore"):
        exists = host.volume_exists(volume)
        creation = None
        if exists:
            check_write_location(host, volume, bind_devices=bind_devices)
            check_target(host, helper_image, volume, force=force)
        else:
            driver, options, labels = _creation(host, manifest, volume, driver_opts, bind_devices, create_as, scratch)
            if volume != manifest.volume and not keep_compose_labels:
                labels = {k: v for k, v in labels.items() if not k.startswith(COMPOSE_LABEL_PREFIX)}
            creation = (driver, options, labels)
        own = None
        if exists and session is None and quiesce != "none":
            own = QuiesceSession(host, [volume], mode=quiesce, action="restore", label_hooks=False)
        with own if own is not None else contextlib.nullcontext():
            if exists:
                refuse_if_in_use(host, volume)
            _write_volume(host, backend, manifest, volume, creation, helper_image, bind_devices, progress, identities, extra_mounts)
        if own is not None and own.problems:
            raise VolsafeError(f"restored {volume}, but " + "; ".join(own.problems))
    return RestoreOutcome(manifest, volume, created_volume=not exists, backend=backend)


COMPOSE_LABEL_PREFIX = "com.docker.compose."


def refuse_if_in_use(host: DockerHost, volume: str) -> None:
    """Raise TargetInUse if a running container mounts ``volume`` (one line: the containers and the flags)."""
    running = sorted(c.name for c in containers_using(host, volume) if c.running)
    if running:
        raise TargetInUse(
            f"volume {volume} is used by running container(s) {', '.join(running)}: restoring would change its files "
            "under them; use --stop or --pause to hold them still during the restore (or stop them yourself)"
        )


def _write_volume(
    host: DockerHost, backend: Backend, manifest: Manifest, volume: str, creation: tuple[str, dict, dict] | None,
    helper_image: str, bind_devices, progress: Reporter, identities: list | None, extra_mounts=lambda: (),
) -> None:
    """Create ``volume`` (when ``creation``, its driver, options and labels, is given), then stage the
    archive (or, from a restic repository, its snapshot: ``extra_mounts`` bring restic and the
    repository into the helper) into it and swap it in, all or nothing."""
    with write_record(host, volume, action="restore", image=helper_image) as record:
        if creation is not None:
            driver, options, labels = creation
            create_volume(host, volume, driver=driver, driver_opts=options, labels=labels, record=record)
            try:  # where the daemon put it (a volume plugin decides that itself)
                check_write_location(host, volume, bind_devices=bind_devices)
            except BaseException:
                remove_volume(host, volume)
                raise
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT) as raw_headers, staged_target(
            host, helper_image, volume, created=creation is not None, role="restore", action="restore", record=record,
            extra_mounts=extra_mounts(),
        ) as target:
            if is_repository(backend) and manifest.extra.get("restic_mode") == "stream":
                with progress.task(f"restore {target.volume}", total=manifest.tar_size or None) as advance:
                    target.extract(restic_dump_tar(backend, manifest, raw_headers, advance))
            elif is_repository(backend):
                restic_extract(target, backend, manifest, raw_headers, progress)
            else:
                _stream_into_staging(target, manifest, backend, raw_headers, progress, identities)
            target.commit(raw_headers)


def _creation(
    host: DockerHost, manifest: Manifest, volume: str, driver_opts: bool, bind_devices,
    create_as: tuple[str, dict] | None, scratch: bool,
) -> tuple[str, dict, dict]:
    """Return the (driver, options, labels) to create ``volume`` with, and say so on stderr when
    they are not the plain default. Raises UnsafeTarget for a host device not in ``bind_devices``
    or where another volume keeps its data."""
    recorded = (manifest.volume_driver or DEFAULT_DRIVER, dict(manifest.volume_driver_opts))
    if scratch:
        driver, options, source = DEFAULT_DRIVER, {}, ""
    elif create_as is not None:
        driver, options = create_as[0] or DEFAULT_DRIVER, dict(create_as[1] or {})
        require_named_device(volume, driver, options, bind_devices, "the source volume's driver options")
        source = "as the source volume"
    elif driver_opts:
        driver, options = recorded
        require_named_device(volume, driver, options, bind_devices, f"the driver options recorded in {manifest.backup_id}")
        source = f"as recorded in {manifest.backup_id}, --driver-opts"
    else:
        driver, options, source = DEFAULT_DRIVER, {}, ""
    check_write_location(host, volume, bind_devices=bind_devices, planned=(driver, options))
    if scratch:
        return driver, options, {}
    if source and (driver, options) != (DEFAULT_DRIVER, {}):
        told.info("creating volume %s with %s (%s)", volume, describe_driver(driver, options), source)
    elif not source and recorded != (DEFAULT_DRIVER, {}):
        told.info(
            "creating volume %s with the default driver; %s recorded %s, which --driver-opts would use",
            volume, manifest.backup_id, describe_driver(*recorded),
        )
    return driver, options, manifest.volume_labels


def _restore_to_path(host, backend, manifest, path, helper_image, force, progress, identities) -> RestoreOutcome:
    """Restore into a directory on the daemon's host through a helper that bind-mounts it (staged, swapped)."""
    path = check_to_path(path)
    with volume_lock(host, manifest.volume, action="restore"):
        try:
            empty = is_empty(host, helper_image, path, mount_type="bind")
        except VolsafeError as exc:
            if "does not exist" in str(exc):
                raise NotFoundError(f"directory {path} does not exist on the Docker daemon's host; create it first") from None
            raise
        if not empty and not force:
            raise TargetNotEmpty(f"directory {path} is not empty; use --force to replace its contents")
        with write_record(host, path, action="restore", image=helper_image, mount_type="bind") as record, \
                tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT) as raw_headers, staged_target(
            host, helper_image, path, created=False, role="restore", action="restore", mount_type="bind", record=record
        ) as target:
            _stream_into_staging(target, manifest, backend, raw_headers, progress, identities)
            target.commit(raw_headers)
    return RestoreOutcome(manifest, path, created_volume=False, backend=backend, target_kind="path")


def check_to_path(path: str) -> str:
    """Return the --to-path directory without trailing slashes. Raises UsageError for a relative
    path and for the host's root directory (what ``"$UNSET/"`` gives)."""
    if not path.startswith("/"):
        raise UsageError(f"--to-path needs an absolute directory on the Docker daemon's host, not {path!r}")
    if posixpath.normpath(path) in ("/", "//"):
        raise UsageError("--to-path must not be the host's root directory '/' (is a variable in it unset?)")
    return path.rstrip("/")


_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9_./-]*\Z")


def parse_container_target(text: str) -> tuple[str, str]:
    """Return (container, path) of ``NAME:PATH``. Raises UsageError if it is not one."""
    name, sep, path = text.partition(":")
    if not sep or not name or not _PLAIN_PATH.match(path) or ".." in path.split("/") or path.rstrip("/") == "":
        raise UsageError(
            f"invalid --to-container {text!r}: expected NAME:/absolute/path (letters, digits, '_', '.', '-', '/'; not '/')"
        )
    return name, path.rstrip("/")


def _restore_to_container(host, backend, manifest, target_spec, force, progress, identities) -> RestoreOutcome:
    """Restore into a path of a running container (e.g. its tmpfs) with the container's own tar, staged and swapped."""
    container, path = target_spec
    label = f"{container}:{path}"
    try:
        with docker_errors(host):
            running = host.api.inspect_container(container)["State"].get("Running")
    except NotFoundError:
        raise NotFoundError(f"no container named {container!r} on {host.url}") from None
    if not running:
        raise VolsafeError(f"container {container!r} is not running")
    session = ContainerSession(host, container)
    if not container_path_empty(session, path) and not force:
        raise TargetNotEmpty(f"{label} is not empty; use --force to replace its contents")
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT) as raw_headers, staged_in_container(session, path, label=label) as target:
        _stream_into_staging(target, manifest, backend, raw_headers, progress, identities)
        target.commit(raw_headers)
    return RestoreOutcome(manifest, label, created_volume=False, backend=backend, target_kind="container")
