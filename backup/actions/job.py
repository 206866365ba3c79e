"""``volsafe jobs run`` and each scheduled run: back up a job's volumes, then apply its retention.

A job prunes only after a fully successful run: if any volume or backend failed, nothing is removed,
so a broken backup never costs an older good one. It prunes only this host's backups: other hosts
sharing the store apply their own retention to theirs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import tzlocal

from backup.actions.backup import BackupOptions, VolumeBackup, run_backup
from backup.actions.prune import Pruned, run_prune
from backup.actions.select import resolve_volumes
from backup.config.schema import JobConfig
from backup.docker.host import DockerHost
from backup.quiesce.hooks import HookSpec
from backup.quiesce.session import job_advice
from backup.archive.manifest import format_time
from backup.progress import Reporter
from backup.jobs.schedule import timezone_of
from backup.selectors import VolumeSelector
from storage_backends import Backend, BackendError

log = logging.getLogger("volsafe.job")


@dataclass
class JobOutcome:
    """What one run of a job did. ``result`` is ``success``, ``failure`` or ``interrupted`` (the
    run was aborted by SIGTERM/SIGINT: ``aborted`` is set; neither a success nor a failure)."""

    job: str
    started: datetime
    finished: datetime | None = None
    duration: float = 0.0
    volumes: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    bytes: int = 0  # stored (compressed) bytes written, per backend summed
    backups: list[VolumeBackup] = field(default_factory=list)
    pruned: list[Pruned] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    aborted: bool = False
    host: str = ""  # the name this host's backups are recorded under ("" if the daemon could not be asked)

    @property
    def result(self) -> str:
        return "interrupted" if self.aborted else ("failure" if self.errors else "success")

    @property
    def ok(self) -> bool:
        return self.result == "success"

    @property
    def removed(self) -> int:
        return sum(1 for p in self.pruned if p.removed)

    def summary(self) -> dict:
        """Return the JSON-ready record kept in the status file and sent to the webhook."""
        return {
            "job": self.job,
            "host": self.host,
            "result": self.result,
            "started": format_time(self.started),
            "finished": format_time(self.finished) if self.finished else None,
            "duration_seconds": round(self.duration, 3),
            "volumes": list(self.volumes),
            "bytes": self.bytes,
            "backends": list(self.backends),
            "backups": [str(b.manifest.backup_id) for b in self.backups if b.manifest is not None],
            "pruned": self.removed,
            "errors": list(self.errors),
        }


def job_selector(job: JobConfig) -> VolumeSelector:
    """Return the volume selection the job's config describes."""
    return VolumeSelector(
        names=tuple(job.volumes),
        all=job.all_volumes,
        labels=dict(job.volume_labels),
        projects=tuple(job.projects),
        exclude=tuple(job.exclude_volumes),
    )


def select_volumes(host: DockerHost, job: JobConfig) -> list[str]:
    """Return the job's volumes: those it names plus those its labels, projects or ``all_volumes``
    pick, minus ``exclude_volumes``, sorted.

    A label value of ``""`` matches any value. Raises VolsafeError if the daemon cannot be asked.
    """
    return resolve_volumes(host, job_selector(job))


def job_backup_options(job: JobConfig, helper_image: str, encrypt_with=None) -> BackupOptions:
    """Return how the job backs up each volume: quiescing, hooks and compression as its config
    says, encrypted for ``encrypt_with`` (Recipients or Passphrase; None: not encrypted)."""
    hooks: tuple[HookSpec, ...] = ()
    if job.hook_container and (job.pre_hook or job.post_hook):
        hooks = (
            HookSpec(
                job.hook_container, job.pre_hook, job.post_hook, job.hook_timeout, job.hook_on_error, source=f"job {job.name}"
            ),
        )
    return BackupOptions(
        helper_image=helper_image,
        stop_containers=job.stop_containers,
        pause_containers=job.pause_containers,
        quiesce_each=job.quiesce_each,
        advice=job_advice(job.name),
        hooks=hooks,
        exclude=tuple(job.exclude),
        level=job.compression_level,
        threads=job.compression_threads,
        recipients=encrypt_with,
    )


def host_name_of(host: DockerHost) -> str:
    """Return the name ``host``'s backups are recorded under, or "" if the daemon cannot be asked
    (the run then fails on its own, with the daemon's error)."""
    try:
        return host.host_name
    except Exception:  # VolsafeError, or a daemon hiccup
        return ""


def job_timezone(job: JobConfig):
    """Return the zone of the job's schedule and retention periods: its own, or the local one."""
    return timezone_of(job.timezone) if job.timezone else tzlocal.get_localzone()


def run_job(
    host: DockerHost,
    job: JobConfig,
    backends: list[Backend],
    helper_image: str,
    progress: Reporter,
    outcome: JobOutcome | None = None,
    *,
    encrypt_with=None,
) -> JobOutcome:
    """Back up the job's volumes to ``backends``, encrypted for ``encrypt_with`` (the [encryption]
    key: Recipients or Passphrase) if given; after a fully successful run, prune each backend.

    Returns the outcome (failures are in ``errors``, never raised). ``outcome``, if given, is filled
    in as the run goes, so a caller that aborts the run (Cancelled) still knows what was done.
    Cancelled propagates; the backup action cleans up after itself.
    """
    outcome = outcome or JobOutcome(job.name, datetime.now(timezone.utc))
    clock = time.monotonic()
    outcome.backends = [b.url for b in backends]
    try:
        outcome.host = host_name_of(host)
        _backup_and_prune(host, job, backends, job_backup_options(job, helper_image, encrypt_with), progress, outcome)
    finally:
        outcome.finished = datetime.now(timezone.utc)
        outcome.duration = time.monotonic() - clock
    return outcome


def _backup_and_prune(host, job, backends, options: BackupOptions, progress, outcome: JobOutcome) -> None:
    try:
        outcome.volumes = select_volumes(host, job)
    except Exception as exc:  # VolsafeError or a daemon hiccup: the run fails, the scheduler goes on
        outcome.errors.append(f"cannot list volumes: {exc}")
        return
    if not outcome.volumes:
        outcome.errors.append("no volume matches the job's volumes, volume_labels, projects and all_volumes")
        return
    def record(result: VolumeBackup) -> None:
        # Recorded as each volume finishes, so an aborted run still reports what it finished.
        outcome.backups.append(result)
        for where, reason in result.failures.items():
            volume = result.volume
            outcome.errors.append(f"{volume}: {reason}" if where == "volume" else f"{volume} to {where}: {reason}")
        if result.manifest is not None:
            outcome.bytes += result.manifest.stored_size * len(result.stored_on)

    outcome.backups = []
    results = run_backup(host, outcome.volumes, backends, options, progress, concurrency=job.concurrency, on_done=record)
    outcome.backups = results  # the same outcomes, now in the job's volume order
    if outcome.errors or job.retention.empty:
        return  # a failed run prunes nothing
    try:
        outcome.pruned = run_prune(
            backends, job.retention, volumes=outcome.volumes, now=datetime.now(timezone.utc), tz=job_timezone(job),
            hosts=(host.host_name,),  # other hosts sharing the store keep theirs: each prunes its own
        )
    except BackendError as exc:
        outcome.errors.append(f"prune: {exc}")
        return
    outcome.errors.extend(f"prune: {p.decision.id} on {p.backend.url}: {p.error}" for p in outcome.pruned if p.error)
