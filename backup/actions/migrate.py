"""``volsafe migrate``: move volumes from one Docker daemon to another, verified, all or nothing.

Direct mode: each volume's tar streams from a created, never started, read-only helper on the
source (Docker's archive endpoint) through volsafe into a writer helper on the target, which
extracts it into a staging directory (``backup.docker.staging``, shared with restore). volsafe hashes the
stream as it sends it; inside the target helper the stream is teed through busybox ``md5sum``
before ``tar -x`` reads it, so the target's digest is of the bytes its tar actually read. MD5, not
SHA-256: it guards against corruption in transit and on the target, not against an attacker (who
could change both ends), and busybox's sha256sum (~100 MB/s) would be the slowest step. Only when
every volume has arrived and every digest matches are the staged trees swapped in, one volume
after the other (renames only). Any failure before that, Ctrl-C included, leaves every target as
it was: volumes created for the migration are removed, existing ones keep their contents.

When the target is remote (tcp://, ssh://) the target leg is gzip-compressed (level 1) by volsafe
and unpacked by busybox ``gunzip`` in the helper. Docker's archive endpoint offers no compressed
form, so the source leg is raw tar whatever the source.

Via mode (``--via BACKEND``): a backup on the source, then a restore on the target, through any
backend; each restore is verified against its manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from backup.restic import is_repository
from backup.actions.backup import BackupOptions, run_backup
from backup.actions.restore import COMPOSE_LABEL_PREFIX, run_restore
from backup.archive.codec import coalesce
from backup.streams.background import BackgroundConsumer
from backup.docker.host import DockerHost, docker_errors
from backup.errors import IntegrityError, NotFoundError, UsageError, VolsafeError
from backup.docker.helper import MOUNT_POINT
from backup.docker.locks import DEFAULT_WAIT, volume_locks
from backup.archive.naming import parse_ref, validate_volume_name
from backup.progress import Reporter
from backup.quiesce.plan import PROJECT_LABEL
from backup.quiesce.session import QuiesceSession
from backup.streams.read_ahead import read_ahead
from backup.docker.staging import (
    DEFAULT_DRIVER,
    SPOOL_LIMIT,
    StagedTarget,
    check_target,
    check_write_location,
    create_volume,
    describe_driver,
    remove_volume,
    require_named_device,
    staged_target,
    write_record,
)
from backup.archive.tar.scanner import TarScanner
from backup.docker.volume_tar import volume_tar
from storage_backends import Backend

log = logging.getLogger(__name__)
told = logging.getLogger("volsafe.volumes")  # shown on stderr: how a volume is created
warned = logging.getLogger("volsafe.quiesce")  # as backup's warning about containers left writing

WIRE_GZIP_LEVEL = 1  # fast: the point is fewer bytes on a network link, not the smallest size
DIGEST_MARKER = "volsafe-md5"
DIGEST_ALGORITHM = "md5"
# $1: staging directory name; $2: "gzip" when the stream arrives gzip-compressed. The stream is teed
# through a FIFO into md5sum, so the digest covers exactly what tar was given; after tar stops
# (at the end marker) the rest is drained so that tee, and with it the digest, sees every byte.
RECEIVE_SCRIPT = f"""
set -eu
d="{MOUNT_POINT}/$1"
f="/tmp/volsafe-$1"
mkdir "$d"
mkfifo "$f.fifo"
md5sum < "$f.fifo" > "$f.sum" 2>/dev/null &
if [ "$2" = gzip ]; then
  gunzip -c | tee "$f.fifo" | {{ tar -x -f - -C "$d"; s=$?; cat > /dev/null; exit $s; }}
else
  tee "$f.fifo" | {{ tar -x -f - -C "$d"; s=$?; cat > /dev/null; exit $s; }}
fi
wait
echo "{DIGEST_MARKER} $(cut -d ' ' -f 1 "$f.sum")"
"""
_DIGEST_LINE = re.compile(rf"^{DIGEST_MARKER} ([0-9a-f]{{32}})$", re.MULTILINE)


@dataclass(frozen=True)
class MigrateOptions:
    """How to migrate: helper images on each side, and what may be replaced or stopped."""

    source_image: str
    target_image: str
    force: bool = False  # replace the contents of targets that have data
    stop: bool = False  # stop the source containers that use the volumes for the duration
    restart: bool = True  # start them again afterwards (False: a cut-over)
    lock_wait: float = DEFAULT_WAIT  # seconds to wait for another volsafe using a source or target volume
    bind_devices: tuple[str, ...] = ()  # host devices (--bind-device) that target volumes may keep their data on
    keep_compose_labels: bool = False  # a renamed target keeps the source's com.docker.compose.* labels too


@dataclass
class VolumeMigration:
    """One volume's move: names, size, time and both digests."""

    source: str
    target: str
    created_volume: bool = False
    tar_size: int = 0
    entries: int = 0
    seconds: float = 0.0
    digest: str = DIGEST_ALGORITHM  # direct: md5 of the tar stream; via: sha256 of the stored archive
    sent_digest: str = ""
    received_digest: str = ""  # direct mode: from the target helper; via mode: the archive's, as checked
    backup_id: str | None = None  # via mode

    @property
    def verified(self) -> bool:
        return bool(self.sent_digest) and self.sent_digest == self.received_digest


@dataclass
class MigrationResult:
    """The whole migration: each volume, the total time, and the containers left stopped."""

    mode: str  # "direct" or "via"
    volumes: list[VolumeMigration] = field(default_factory=list)
    seconds: float = 0.0
    left_stopped: list[str] = field(default_factory=list)
    restart_problems: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(v.tar_size for v in self.volumes)

    @property
    def verified(self) -> bool:
        return bool(self.volumes) and all(v.verified for v in self.volumes)


def project_volumes(host: DockerHost, project: str) -> list[str]:
    """Return the names of the volumes labelled com.docker.compose.project=``project``, sorted.

    Raises NotFoundError when there are none.
    """
    with docker_errors(host):
        listing = host.api.volumes(filters={"label": f"{PROJECT_LABEL}={project}"}).get("Volumes") or []
    names = sorted(v["Name"] for v in listing)
    if not names:
        raise NotFoundError(f"no volumes of Compose project {project!r} on {host.url} (label {PROJECT_LABEL}={project})")
    return names


def plan_targets(volumes: list[str], to_volume: str | None) -> list[tuple[str, str]]:
    """Return (source, target) name pairs. Raises UsageError for a rename of several volumes or duplicates."""
    if not volumes:
        raise UsageError("name at least one VOLUME, or --project")
    if to_volume == "":
        raise UsageError("--to-volume must not be empty")
    if to_volume and len(volumes) != 1:
        raise UsageError("--to-volume renames one volume; name exactly one VOLUME with it")
    pairs = [(validate_volume_name(v), validate_volume_name(to_volume or v)) for v in volumes]
    if len({s for s, _ in pairs}) != len(pairs):
        raise UsageError("a volume is named twice")
    return pairs


def _sent_stream(
    tar_chunks: Iterable[bytes], scanner: TarScanner, digest, advance, gzip: bool
) -> Iterator[bytes]:
    """Yield the source's tar stream as it goes on the wire (gzip'd if asked), hashing and scanning it.

    The last piece is held back until the scanner saw the tar end marker, so a source stream that
    was cut short raises IntegrityError before the target could take it for a whole one.
    """
    compressor = zlib.compressobj(WIRE_GZIP_LEVEL, zlib.DEFLATED, 31) if gzip else None  # 31: gzip framing
    held: bytes | None = None
    # The scan and the MD5 (about 1 CPU-second per 600 MB) run beside the sending, in their own threads.
    with BackgroundConsumer(scanner.feed, "tar-scan") as scan, BackgroundConsumer(digest.update, "md5") as hasher:
        for chunk in coalesce(tar_chunks):
            scan.feed(chunk)
            hasher.feed(chunk)
            advance(len(chunk))
            out = compressor.compress(chunk) if compressor else chunk
            if held:
                yield held
            held = out
        scan.wait()
        hasher.wait()
    scanner.finish()
    if compressor:
        held = (held or b"") + compressor.flush()
    if held:
        yield held


def _received_digest(output: str, volume: str) -> str:
    """Return the digest the target helper printed. Raises VolsafeError if it printed none."""
    found = _DIGEST_LINE.findall(output)
    if not found:
        raise VolsafeError(f"migration into {volume!r}: the target helper reported no digest")
    return found[-1]


def _transfer(
    source: DockerHost, target: StagedTarget, name: str, options: MigrateOptions, raw_headers, outcome: VolumeMigration,
    gzip: bool, progress: Reporter,
) -> None:
    """Stream one volume from the source into the target's staging directory and compare digests.

    Raises IntegrityError when the digests differ, VolsafeError for any other failure.
    """
    started = time.monotonic()
    scanner = TarScanner(raw_headers)
    digest = hashlib.md5(usedforsecurity=False)
    with volume_tar(source, options.source_image, name, role="migrate") as tar_chunks, progress.task(f"migrate {name}") as advance:
        result = target.extract(
            read_ahead(_sent_stream(tar_chunks, scanner, digest, advance, gzip)),
            script=RECEIVE_SCRIPT,
            args=["gzip" if gzip else "raw"],
        )
    outcome.tar_size, outcome.entries = scanner.tar_size, scanner.entries
    outcome.sent_digest = digest.hexdigest()
    outcome.received_digest = _received_digest(result.output, outcome.target)
    outcome.seconds = time.monotonic() - started
    if not outcome.verified:
        raise IntegrityError(
            f"migration of {name!r} failed verification: sent {DIGEST_ALGORITHM} {outcome.sent_digest}, "
            f"the target read {outcome.received_digest}; the target was left as it was"
        )


@contextlib.contextmanager
def _source_quiesced(host: DockerHost, volumes: list[str], options: MigrateOptions, result: MigrationResult) -> Iterator[None]:
    """Keep the source containers of ``volumes`` stopped (with --stop) for the block: one quiesce
    for all volumes, so each container stops once.

    After a failure they are always started again: a failed migration changes nothing. After
    success they are started again unless ``options.restart`` is False.
    """
    session = QuiesceSession(host, volumes if options.stop else [], mode="stop", action="migration", label_hooks=False)
    with session:
        yield
        result.left_stopped = session.finish(restart=options.restart)
    result.restart_problems = session.problems


def _warn_live_writers(host: DockerHost, volumes: list[str]) -> None:
    """Warn, as ``backup`` does, about each volume that running containers mount read-write: what
    arrives is only crash-consistent. Raises VolsafeError if the daemon cannot be asked."""
    for volume in volumes:
        writing = QuiesceSession(host, [volume], action="migration", label_hooks=False).survey().plan.left_writing
        if writing:
            warned.warning(
                "volume %s is mounted read-write by running container(s) %s: the migrated copy is only crash-consistent "
                "(use --stop)", volume, ", ".join(c.name for c in writing),
            )


def run_migrate(
    source: DockerHost,
    target: DockerHost,
    volumes: list[str],
    *,
    options: MigrateOptions,
    to_volume: str | None = None,
    via: Backend | None = None,
    progress: Reporter,
) -> MigrationResult:
    """Move ``volumes`` from ``source`` to ``target`` (renaming one with ``to_volume``); return what moved.

    Every target is checked before anything starts: one that exists with data raises TargetNotEmpty
    unless ``options.force``. Raises NotFoundError for a missing source volume, IntegrityError when
    a digest does not match, VolsafeError for any other failure; in every failure case the targets
    are left as they were, and the source is never changed (its stopped containers are restarted).
    """
    started = time.monotonic()
    pairs = plan_targets(volumes, to_volume)
    same_daemon = source.identity == target.identity
    for src, dst in pairs:
        if same_daemon and src == dst:
            raise UsageError(f"source and target of {src!r} are the same volume on the same daemon; use --to-volume")
    infos = {src: source.volume(src) for src, _ in pairs}
    for src, dst in pairs:  # before anything is stopped, backed up or created
        _check_target_location(target, src, dst, infos[src], options.bind_devices)
    result = MigrationResult(mode="via" if via else "direct")
    # Direct mode holds every lock from the target check to the commit, so no other volsafe fills a
    # checked target or restarts a stopped source meanwhile; via mode's backup and restore each take
    # their own volume's lock (a second flock of ours would wait for the first).
    with _locked(source, target, pairs, options.lock_wait) if via is None else contextlib.nullcontext():
        if via is None:  # again under the locks
            for src, dst in pairs:
                _check_target_location(target, src, dst, infos[src], options.bind_devices)
        exists = {dst: check_target(target, options.target_image, dst, force=options.force) for _, dst in pairs}
        if via is None and not options.stop:  # via mode: its backup warns, as every backup does
            _warn_live_writers(source, [src for src, _ in pairs])
        with _source_quiesced(source, [src for src, _ in pairs], options, result):
            if via is not None:
                result.volumes = [_via(source, target, src, dst, via, options, progress, infos[src]) for src, dst in pairs]
            else:
                result.volumes = _direct(source, target, pairs, infos, exists, options, progress)
    result.seconds = time.monotonic() - started
    return result


def _driver_of(info: dict) -> tuple[str, dict]:
    """Return the (driver, options) of a volume's inspect data."""
    return info.get("Driver") or DEFAULT_DRIVER, dict(info.get("Options") or {})


def _check_target_location(target: DockerHost, src: str, dst: str, info: dict, bind_devices) -> None:
    """Refuse (UnsafeTarget) a target volume that keeps, or created like the source would keep, its
    data on a host device not named with --bind-device, or where another volume keeps its data."""
    if target.volume_exists(dst):
        check_write_location(target, dst, bind_devices=bind_devices)
        return
    driver, options = _driver_of(info)
    require_named_device(dst, driver, options, bind_devices, f"the driver options of source volume {src!r}")
    check_write_location(target, dst, bind_devices=bind_devices, planned=(driver, options))


@contextlib.contextmanager
def _locked(source: DockerHost, target: DockerHost, pairs: list[tuple[str, str]], wait: float) -> Iterator[None]:
    """Hold the locks of every source and target volume, so that no other volsafe backs up or
    restores them meanwhile. Raises VolumeBusy (after waiting) when another holds one."""
    with volume_locks([(source, src) for src, _ in pairs] + [(target, dst) for _, dst in pairs], action="migration", wait=wait):
        yield


def _direct(
    source: DockerHost, target: DockerHost, pairs: list[tuple[str, str]], infos: dict, exists: dict, options: MigrateOptions,
    progress: Reporter,
) -> list[VolumeMigration]:
    """Stage every volume on the target, verify each, then commit them all. Returns the outcomes."""
    gzip = target.remote
    outcomes = []
    with contextlib.ExitStack() as stack:
        staged: list[tuple[StagedTarget, tempfile.SpooledTemporaryFile[bytes]]] = []
        for src, dst in pairs:
            info = infos[src]
            outcome = VolumeMigration(src, dst, created_volume=not exists[dst])
            record = stack.enter_context(write_record(target, dst, action="migration", image=options.target_image))
            if not exists[dst]:
                driver, driver_opts = _driver_of(info)
                if (driver, driver_opts) != (DEFAULT_DRIVER, {}):
                    told.info("creating volume %s on %s with %s (as the source volume)", dst, target.url, describe_driver(driver, driver_opts))
                labels = dict(info.get("Labels") or {})
                if dst != src and not options.keep_compose_labels:  # a renamed copy must not join the Compose project
                    labels = {k: v for k, v in labels.items() if not k.startswith(COMPOSE_LABEL_PREFIX)}
                create_volume(target, dst, driver=driver, driver_opts=driver_opts, labels=labels, record=record)
                try:  # where the daemon put it (a volume plugin decides that itself)
                    check_write_location(target, dst, bind_devices=options.bind_devices)
                except BaseException:
                    remove_volume(target, dst)
                    raise
            # Entered right after the volume exists: from here on, any failure removes or restores it.
            staging = stack.enter_context(
                staged_target(
                    target, options.target_image, dst, created=not exists[dst], role="migrate", action="migration", record=record
                )
            )
            raw_headers = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT))
            _transfer(source, staging, src, options, raw_headers, outcome, gzip, progress)
            log.info("staged %s on %s: %d bytes, verified", dst, target.url, outcome.tar_size)
            staged.append((staging, raw_headers))
            outcomes.append(outcome)
        for staging, raw_headers in staged:
            staging.commit(raw_headers)
    return outcomes


def _via(
    source: DockerHost, target: DockerHost, src: str, dst: str, backend: Backend, options: MigrateOptions, progress: Reporter,
    info: dict,
) -> VolumeMigration:
    """Back up ``src`` on the source to ``backend``, then restore it as ``dst`` on the target. Raises VolsafeError."""
    started = time.monotonic()
    # A restic snapshot of the volume's files can only be restored by restic beside the repository
    # (restic dump turns device nodes and FIFOs into empty files); a streamed one, from anywhere.
    stream = "migrate: the snapshot is restored by another Docker daemon" if is_repository(backend) else None
    backup_options = BackupOptions(helper_image=options.source_image, lock_wait=options.lock_wait, restic_stream_reason=stream)
    (backed_up,) = run_backup(source, [src], [backend], backup_options, progress)
    if not backed_up.ok:
        reasons = "; ".join(backed_up.failures.values())
        raise VolsafeError(f"backup of {src!r} to {backend.url} failed: {reasons}")
    manifest = backed_up.manifest
    assert manifest is not None  # ok: the backup wrote one
    # A new target volume gets the live source volume's driver and options (read before the backup),
    # not whatever the manifest in the backend says by the time it is read back.
    restored = run_restore(
        target, backend, parse_ref(str(manifest.backup_id)), helper_image=options.target_image, to_volume=dst,
        force=options.force, progress=progress, create_as=_driver_of(info), bind_devices=options.bind_devices,
        keep_compose_labels=options.keep_compose_labels,
    )
    # The restore streamed the archive through its sha256, size and entry checks against the manifest
    # that the backup wrote from what it read: both digests are of the stored archive.
    return VolumeMigration(
        src, dst, created_volume=restored.created_volume, tar_size=manifest.tar_size, entries=manifest.entries,  # type: ignore[arg-type]  # set: just written
        seconds=time.monotonic() - started, digest="sha256" if manifest.sha256 else "content",
        # A restic snapshot has no archive: restore checked the tar restic gave back against the
        # content digest the backup computed from what the helper read.
        sent_digest=manifest.sha256 or manifest.content_digest, received_digest=manifest.sha256 or manifest.content_digest,
        backup_id=str(manifest.backup_id),
    )
