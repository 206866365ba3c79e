"""``volsafe backup``: stream a volume out of a read-only helper, compress it, store it everywhere."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from backup import __version__
from backup.archive.codec import DEFAULT_LEVEL, JOB_SIZE, PARALLEL_JOB_SIZE, ArchiveStats, compress_tar, encrypted_stored
from backup.streams.concurrency import cancellable, run_concurrently
from backup.quiesce.session import CLI_ADVICE, QuiesceSession, label_hooks_among
from backup.docker.host import DockerHost
from backup.errors import VolsafeError
from backup.streams.fanout import save_to_all
from backup.docker.container_tar import container_tar
from backup.quiesce.hooks import HookSpec
from backup.docker.locks import DEFAULT_WAIT, volume_lock
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, backup_id_from_manifest_key, new_stamp, validate_volume_name
from backup.archive.catalog import load_manifest
from backup.progress import Reporter, Task
from backup.streams.read_ahead import read_ahead
from backup.archive.tar.exclude import FilterStats, exclude_paths
from backup.archive.tar.scanner import TarScanner
from backup.docker.size_scan import size_scan
from backup.docker.volume_tar import volume_tar
from backup.restic import split_targets
from storage_backends import Backend, BackendError

if TYPE_CHECKING:  # pyrage is loaded only when encrypting
    from backup.crypto.encryption import Passphrase, Recipients

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupOptions:
    """How to back up: helper image, compression, and how to keep the volume consistent."""

    helper_image: str
    level: int = DEFAULT_LEVEL
    threads: int | None = None  # None: one zstd worker per CPU
    job_size: int = JOB_SIZE  # zstd's work unit per worker (backup.archive.codec); smaller when volumes run at once
    recipients: Recipients | Passphrase | None = None  # age-encrypt the archive
    stop_containers: bool = False  # stop the running containers that mount the volume
    pause_containers: bool = False  # pause them instead (wins over stop_containers)
    hooks: tuple[HookSpec, ...] = ()  # besides those declared by container labels
    lock_wait: float = DEFAULT_WAIT  # seconds to wait for another volsafe using the volume
    exclude: tuple[str, ...] = ()  # path patterns left out of the archive (backup.selectors.path_excluded)
    quiesce_each: bool = False  # quiesce (and run hooks) around each volume, not once for the whole run
    advice: str = CLI_ADVICE  # how the crash-consistency warning says to quiesce (CLI flags, or a job's keys)
    # Why a backup into a restic repository must be a streamed snapshot (the volume's tar as one
    # file) even where restic could run beside the files: migrate --via restores it on another daemon.
    restic_stream_reason: str | None = None

    @property
    def quiesce_mode(self) -> str:
        """Return "pause", "stop" or "none"."""
        return "pause" if self.pause_containers else ("stop" if self.stop_containers else "none")

    def volumes_at_once(self, limit: int) -> int:
        """Return how many volumes may be backed up at once: ``limit``; with ``quiesce_each``, 1 when
        containers are stopped or paused or the options' hooks run, since several volumes may share
        those containers. (Hooks declared by container labels are checked by ``run_backup``.)"""
        return 1 if self.quiesce_each and (self.quiesce_mode != "none" or self.hooks) else limit

    def session(self, host: DockerHost, volumes: Iterable[str]) -> QuiesceSession:
        """Return the quiesce session of a backup of ``volumes`` with these options."""
        return QuiesceSession(host, volumes, mode=self.quiesce_mode, hooks=self.hooks, advice=self.advice)


@dataclass(frozen=True)
class MountSource:
    """One mount of a container, as ``backup --container`` backs it up.

    ``kind`` is "volume", "bind" or "tmpfs"; ``source`` the volume name or the directory on the
    daemon's host ("" for tmpfs); ``storage_name`` the name the backups are stored and listed under.
    """

    kind: str
    container: str
    source: str
    destination: str
    storage_name: str

    def manifest_record(self) -> dict[str, str]:
        """Return the manifest's ``mount`` object."""
        return {"type": self.kind, "source": self.source, "destination": self.destination, "container": self.container}


@dataclass
class VolumeBackup:
    """The outcome of backing up one volume: the manifest, where it was stored, and where it failed."""

    volume: str
    manifest: Manifest | None = None
    stored_on: list[Backend] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # backend url (or "volume") -> one-line reason
    by_backend: dict[str, Manifest] = field(default_factory=dict)  # url -> its own manifest (restic repositories)

    def manifest_on(self, backend: Backend) -> Manifest | None:
        """Return the manifest of the backup stored on ``backend``."""
        return self.by_backend.get(backend.url, self.manifest)

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not self.failures


def _describe(exc: BaseException | None) -> str:
    return str(exc) or type(exc).__name__


def _then(chunks: Iterable[bytes], at_end: Callable[[], None]) -> Iterator[bytes]:
    """Yield ``chunks``; once they are exhausted (not when cut short), call ``at_end``."""
    yield from chunks
    at_end()


@contextlib.contextmanager
def _tar_of(host: DockerHost, volume: str, mount: MountSource | None, options: BackupOptions) -> Iterator[Iterator[bytes]]:
    """Yield the tar stream of what is backed up: a volume or bind directory through a read-only
    helper (``backup.docker.volume_tar``: a FIFO or Docker's archive endpoint), or a tmpfs path from
    inside its running container."""
    if mount is not None and mount.kind == "tmpfs":
        with container_tar(host, mount.container, mount.destination) as chunks:
            yield chunks
        return
    source, mount_type = (mount.source, "bind") if mount is not None and mount.kind == "bind" else (volume, "volume")
    with volume_tar(host, options.helper_image, source, role="backup", mount_type=mount_type) as chunks:
        yield chunks


@contextlib.contextmanager
def _size_scanned(
    host: DockerHost, volume: str, mount: MountSource | None, backends: list[Backend], options: BackupOptions, progress: Reporter,
    task: Task,
) -> Iterator[None]:
    """Give the progress bar a total, from the volume's previous backup on ``backends`` or else a size
    scan, beside the backup (``backup.docker.size_scan``), only when a bar is drawn. Not with
    --exclude (the total would count what is left out) nor for a tmpfs mount."""
    if not progress.wants_totals or options.exclude or (mount is not None and mount.kind == "tmpfs"):
        yield
        return
    source, mount_type = (mount.source, "bind") if mount is not None and mount.kind == "bind" else (volume, "volume")
    with size_scan(
        host, options.helper_image, source, task.set_total, mount_type=mount_type, previous=lambda: _previous_totals(backends, volume)
    ):
        yield


def _previous_totals(backends: list[Backend], volume: str) -> tuple[int, int] | None:
    """Return (tar_size, entries) of the newest backup of ``volume`` on the first backend that has
    one (one listing and one manifest read), or None."""
    for backend in backends:
        try:
            ids = [bid for info in backend.list(f"{volume}/") if (bid := backup_id_from_manifest_key(info.key))]
            ids = [bid for bid in ids if bid.volume == volume]
            if ids:
                manifest = load_manifest(backend, max(ids, key=lambda bid: bid.stamp))
                if manifest.tar_size is None or manifest.entries is None:
                    return None  # sealed (an encrypted backup's sizes are not in the clear): the scan it is
                return manifest.tar_size, manifest.entries
        except VolsafeError as exc:  # BackendError, ManifestError: then the scan it is
            log.debug("no previous size of %s from %s: %s", volume, backend.url, exc)
    return None


def backup_volume(
    host: DockerHost,
    volume: str,
    backends: list[Backend],
    options: BackupOptions,
    progress: Reporter,
    mount: MountSource | None = None,
    session: QuiesceSession | None = None,
) -> VolumeBackup:
    """Back up one volume to every backend in a single read.

    Returns the outcome; a backup counts on each backend that stored both archive and manifest.
    Raises VolsafeError if the volume cannot be read at all (nothing is stored then), if a pre-hook
    fails, if its containers cannot be stopped or paused, or if another volsafe holds the volume
    longer than ``options.lock_wait``. Containers stopped or paused for the backup are brought back
    as soon as Docker's archive stream ends, and on every other path.

    With ``mount`` (a bind or tmpfs mount of a container), ``volume`` is its storage name; such
    mounts are never quiesced (stopping a container would lose its tmpfs data).

    ``session``: the run's quiesce, already started (``run_backup``); the volume is marked done in
    it once read, or failed. Without it the volume gets a session of its own.
    """
    if session is None:
        plain = mount is None or mount.kind == "volume"
        # A bind or tmpfs mount is never quiesced: an empty session, which only tracks the read.
        session = options.session(host, [volume]) if plain else QuiesceSession(host, [volume], mode="none")
        with session:
            outcome = _backup_volume(host, volume, backends, options, progress, mount, session)
    else:
        try:
            outcome = _backup_volume(host, volume, backends, options, progress, mount, session)
        finally:
            session.volume_done(volume)
    problems = session.claim_problems()
    if problems:
        # The archive may well be stored; the run still fails, so that someone looks at the app.
        outcome.failures["volume"] = "after reading the volume: " + "; ".join(problems)
    return outcome


def _backup_volume(
    host: DockerHost, volume: str, backends: list[Backend], options: BackupOptions, progress: Reporter,
    mount: MountSource | None, quiesce: QuiesceSession,
) -> VolumeBackup:
    validate_volume_name(volume)
    backends, repositories = split_targets(backends)
    if repositories:
        outcome = _backup_to_repositories(host, volume, repositories, options, progress, mount)
        if not backends:
            return outcome
        try:
            rest = _backup_volume(host, volume, backends, options, progress, mount, quiesce)  # the same quiesce
        except VolsafeError as exc:  # the restic snapshots are stored all the same: report them
            outcome.failures["volume"] = str(exc)
            return outcome
        rest.stored_on += outcome.stored_on
        rest.failures.update(outcome.failures)
        rest.by_backend.update(outcome.by_backend)
        rest.manifest = rest.manifest or outcome.manifest
        return rest
    plain = mount is None or mount.kind == "volume"
    info = host.volume(volume) if plain else {}
    created = datetime.now(timezone.utc)
    backup_id = BackupId(volume, new_stamp(created))
    stats = ArchiveStats()
    outcome = VolumeBackup(volume)
    filtered = FilterStats()

    with volume_lock(host, volume, action="backup", wait=options.lock_wait), _tar_of(
        host, volume, mount, options
    ) as tar_chunks, progress.task(f"backup {volume}") as advance, _size_scanned(
        host, volume, mount, backends, options, progress, advance
    ):
        # The volume is fully read when Docker's stream ends: bring the application back then (once
        # every volume of the session is), while the upload's tail is still being written.
        tar = cancellable(_then(read_ahead(tar_chunks), lambda: quiesce.volume_done(volume)))
        if options.exclude:
            tar = exclude_paths(tar, options.exclude, filtered)
        scanner = TarScanner()  # its running count of entries goes to the progress bar
        stored = compress_tar(
            tar, stats, level=options.level, threads=options.threads, progress=lambda n: advance(n, scanner.entries), scanner=scanner,
            job_size=options.job_size,
        )
        if options.recipients is not None:
            stored = encrypted_stored(stored, options.recipients, stats)
        results = save_to_all(backends, backup_id.archive_key, stored)
    if filtered.links_dropped:
        log.warning(
            "%s: left out %d hard link(s) to excluded files (their data went with the excluded name)", volume, filtered.links_dropped
        )

    manifest = Manifest(
        backup_id=backup_id,
        created=created,
        volume_labels=info.get("Labels") or {},
        volume_driver=info.get("Driver") or "local",
        volume_driver_opts=info.get("Options") or {},
        source_hostname=host.host_name,
        source_docker_id=host.daemon_id,
        volsafe_version=__version__,
        tar_size=stats.tar_size,
        stored_size=stats.stored_size,
        sha256=stats.sha256,
        entries=stats.entries,
        compression_level=options.level,
        content_digest=stats.content_digest,
        encryption_recipients=options.recipients.fingerprints if options.recipients is not None else None,
        encryption_passphrase=options.recipients is not None and options.recipients.by_passphrase,
        mount=mount.manifest_record() if mount is not None else None,
        excluded_paths=options.exclude,
    )
    if options.recipients is not None and any(result.ok for result in results):
        from backup.crypto.encryption import seal_metadata  # pyrage is loaded only when encrypting

        # The plaintext's size, entry count and digest would link equal contents: stored sealed only.
        manifest = seal_metadata(manifest, options.recipients)
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


def _backup_to_repositories(host, volume, repositories, options, progress, mount) -> VolumeBackup:
    """Back up ``volume`` into each restic repository (``backup.restic``: restic reads its files)."""
    from backup.restic.actions import backup_volume as restic_backup

    outcome = VolumeBackup(volume)
    for repo in repositories:
        if mount is not None and mount.kind != "volume":
            outcome.failures[repo.url] = f"restic targets back up volumes, not {mount.kind} mounts"
            continue
        try:
            manifest = restic_backup(host, volume, repo, options, progress)
        except VolsafeError as exc:
            outcome.failures[repo.url] = _describe(exc)
            continue
        outcome.stored_on.append(repo)
        outcome.by_backend[repo.url] = manifest
        outcome.manifest = outcome.manifest or manifest
    return outcome


def _remove_quietly(backend: Backend, key: str) -> None:
    """Remove an archive whose manifest could not be written; it would only be dead weight."""
    try:
        backend.remove(key)
    except BackendError as exc:
        log.warning("could not remove orphaned archive %s from %s: %s", key, backend.url, exc)


def run_backup(
    host: DockerHost,
    volumes: list[str],
    backends: list[Backend],
    options: BackupOptions,
    progress: Reporter,
    mounts: Iterable[MountSource] = (),
    *,
    concurrency: int = 1,
    on_done: Callable[[VolumeBackup], None] | None = None,
) -> list[VolumeBackup]:
    """Back up each volume, then each container mount, up to ``concurrency`` at once (one at a time
    when containers are stopped or paused, or hooks run, given or declared by container labels);
    return one outcome each, failures included, in the order given.

    ``on_done`` is called (in the calling thread) with each outcome as soon as it is known, so a
    caller that is cancelled midway still knows what finished. Cancelled (Ctrl-C, SIGTERM) stops
    every backup in flight; each cleans up after itself before Cancelled propagates.
    """
    work = [(volume, None) for volume in volumes] + [(m.storage_name, m) for m in mounts]
    if not options.quiesce_each and volumes:
        return _run_in_one_session(host, work, backends, _at_once(options, work, concurrency), progress, concurrency, on_done)

    limit = options.volumes_at_once(concurrency)
    if limit > 1 and len(work) > 1:
        try:
            hooked = label_hooks_among(host, [volume for volume, mount in work if mount is None])
        except VolsafeError:
            hooked = ["(unknown: the daemon could not be asked)"]
        if hooked:
            # A pre-hook of one volume must not run while another volume of the same app is read.
            log.info("one volume at a time: container(s) %s declare backup hooks", ", ".join(hooked))
            limit = 1
    chosen = _at_once(options, work, limit)

    def one(item: tuple[str, MountSource | None]) -> VolumeBackup:
        volume, mount = item
        try:
            return backup_volume(host, volume, backends, chosen, progress, mount=mount)
        except VolsafeError as exc:
            return VolumeBackup(volume, failures={"volume": str(exc)})

    return run_concurrently(work, one, limit, on_done)


def _at_once(options: BackupOptions, work: list, limit: int) -> BackupOptions:
    """Return ``options`` for backing up ``work`` up to ``limit`` at once: smaller zstd jobs when
    several run at once, as their streams fill the cores already (``PARALLEL_JOB_SIZE``: memory)."""
    return replace(options, job_size=PARALLEL_JOB_SIZE) if len(work) > 1 and limit > 1 else options


def backup_plan(
    host: DockerHost, volumes: list[str], mounts: Iterable[MountSource], backends: list[Backend], options: BackupOptions
) -> dict:
    """Return what ``run_backup`` would do (``backup --dry-run``), asking Docker only read-only questions:
    the volumes, where each would go, and per quiesce session the containers stopped or paused (in
    order), those left writing, and the hooks. Nothing is written and no container is touched."""
    mounts = list(mounts)
    groups = [[v] for v in volumes] if options.quiesce_each else ([list(volumes)] if volumes else [])
    sessions = []
    for group in groups:
        survey = options.session(host, group).survey()
        sessions.append({
            "volumes": group,
            "mode": survey.plan.mode,
            "quiesce": [c.name for c in survey.plan.order],
            "left_writing": [c.name for c in survey.plan.left_writing],
            "hooks": [{"container": h.container, "pre": h.pre, "post": h.post, "source": h.source} for h in survey.hooks],
        })
    return {
        "volumes": list(volumes) + [m.storage_name for m in mounts],
        "to": [b.url for b in backends],
        "sessions": sessions,
    }


def _run_in_one_session(host, work, backends, options: BackupOptions, progress, concurrency: int, on_done) -> list[VolumeBackup]:
    """Back up ``work`` inside one quiesce of every volume's containers: each stops (or pauses) once,
    in Compose order, and comes back once the last volume is read. Hooks run once per container."""
    session = options.session(host, [volume for volume, mount in work if mount is None])
    try:
        session.__enter__()
    except VolsafeError as exc:  # a pre-hook failed, or a container could not be stopped: nothing is read
        outcomes = [VolumeBackup(volume, failures={"volume": str(exc)}) for volume, _ in work]
        for outcome in outcomes:
            if on_done is not None:
                on_done(outcome)
        return outcomes

    def one(item: tuple[str, MountSource | None]) -> VolumeBackup:
        volume, mount = item
        try:
            return backup_volume(host, volume, backends, options, progress, mount=mount, session=session if mount is None else None)
        except VolsafeError as exc:
            return VolumeBackup(volume, failures={"volume": str(exc)})

    try:
        outcomes = run_concurrently(work, one, concurrency, on_done)
    except BaseException as exc:
        session.__exit__(type(exc), exc, exc.__traceback__)
        raise
    session.__exit__(None, None, None)
    late = session.claim_problems()
    if late:  # not seen by any volume's outcome (possible only when every volume failed before the end)
        for problem in late:
            log.error("%s", problem)
        outcomes[0].failures["volume"] = "; ".join(late)
    return outcomes
