"""The long-running scheduler behind ``volsafe run``.

APScheduler 3.x decides *when*; its worker thread only puts the job's name on a queue. Runs happen
one at a time in the main thread, which gives three guarantees without any locks:

* a job never overlaps with itself: a start that comes while the job runs is skipped, and two
  starts while it waits in the queue are coalesced into one;
* two jobs never work on the same volume at once (they never run at once at all);
* a running backup can be aborted cleanly: SIGTERM/SIGINT raise ``Cancelled`` in the main thread
  once the stop timeout has passed, and the backup action's own clean-up runs (the helper is
  removed, the partial archive is discarded, no manifest is written, so nothing partial is listed).
  Such a run is recorded as ``interrupted``, not as a failure: no failure webhook, no 503.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from backup.actions.job import JobOutcome, run_job
from backup.actions.verify import VERIFY_SUFFIX, run_verify_job
from backup.crypto.encryption import configured_identities, configured_key
from backup.config.schema import Config, JobConfig
from backup.docker.host import DockerHost
from backup.archive.hosts import configured_host_name
from backup.errors import Cancelled, VolsafeError
from backup.jobs.health import HealthServer, StatusStore, send_webhook
from backup.config.locations import default_location, open_locations
from backup.archive.manifest import parse_time
from backup.progress import Reporter
from backup.units import human_size
from storage_backends import Backend

log = logging.getLogger("volsafe.scheduler")
job_log = logging.getLogger("volsafe.job")


def job_backends(config: Config, job: JobConfig) -> list[Backend]:
    """Return the backends a job writes to (its names, or the default directory). Raises UsageError."""
    return open_locations(list(job.backends) or [default_location()], config.backends)


def finish_run(config: Config, outcome: JobOutcome, store: StatusStore | None = None, log_line: bool = True) -> dict:
    """Log the run's one outcome line (if ``log_line``), record it in the status file, call the webhook
    (for a failure, and a success if ``webhook_on_success``; never for an interrupted run), and send
    the run's event to the [notify] routes that take it (``backup.jobs.notify``).

    Returns the summary. Never raises for a status file or webhook problem (it logs them).
    """
    if not outcome.host:
        try:  # the daemon could not be asked: the configured name, if any, still says which host failed
            outcome.host = configured_host_name(config.host_name, os.environ) or ""
        except VolsafeError:
            pass
    summary = outcome.summary()
    line = (
        f"job {outcome.job}: {outcome.result}: {len(outcome.volumes)} volume(s) {','.join(outcome.volumes) or '-'}, "
        f"{human_size(outcome.bytes)}, {outcome.duration:.1f}s, to {', '.join(outcome.backends) or '-'}"
    )
    if outcome.ok and outcome.pruned:
        line += f"; pruned {outcome.removed}, kept {len(outcome.pruned) - outcome.removed}"
    if outcome.errors:
        more = f" (and {len(outcome.errors) - 1} more)" if len(outcome.errors) > 1 else ""
        line += f"; error: {outcome.errors[0]}{more}"
    if log_line:
        level = logging.INFO if outcome.ok else (logging.WARNING if outcome.aborted else logging.ERROR)
        job_log.log(level, line, extra={"fields": summary})
    try:
        (store or StatusStore(config.status_file)).record(summary)
    except OSError as exc:
        log.warning("cannot write the status file %s: %s", config.status_file, exc)
    # An interrupted run (SIGTERM/SIGINT: volsafe was stopped, e.g. for an upgrade) is no failure.
    if config.webhook_url and not outcome.aborted and (not outcome.ok or config.webhook_on_success):
        send_webhook(config.webhook_url, summary, config.webhook_timeout)
    if config.notify and not outcome.aborted:
        from backup.jobs.notify import notify_run  # apprise is loaded only when something is sent

        sizes = {b.volume: b.manifest.stored_size for b in outcome.backups if b.manifest is not None}
        notify_run(config, summary, sizes)
    return summary


def missed_run(job: JobConfig, last_started: datetime | None, now: datetime, grace: float) -> datetime | None:
    """Return the start the job missed while volsafe was down, if it is at most ``grace`` seconds
    late; else None. Several missed starts count as one (the newest is what matters)."""
    if last_started is None:
        return None
    trigger = job.trigger()
    if isinstance(trigger, IntervalTrigger):
        due = last_started + trigger.interval
    else:
        due = trigger.get_next_fire_time(None, last_started + timedelta(seconds=1))
    if due is None or due > now:
        return None
    return due if (now - due).total_seconds() <= grace else None


class Scheduler:
    """Runs the config's jobs on their schedules until stopped by SIGTERM or SIGINT."""

    def __init__(
        self,
        config: Config,
        docker: Callable[[], DockerHost],
        helper_image: Callable[[], str],
        progress: Reporter | None = None,
    ):
        self.config = config
        self.docker = docker
        self.helper_image = helper_image
        self.progress = progress or Reporter()
        self.store = StatusStore(config.status_file)
        self.backends = {name: job_backends(config, job) for name, job in config.jobs.items()}
        # Read once, at start: a bad key file stops `volsafe run` at once rather than each run.
        self.encryption_key = configured_key(config)
        self.identities = configured_identities(config)
        self._queue: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self._running: str | None = None
        self._stopping = False

    # -- called from APScheduler's worker thread --

    def request(self, name: str) -> None:
        """Ask for a run of job ``name``; skipped while it runs, coalesced while it waits."""
        with self._lock:
            if self._stopping:
                return
            if name == self._running:
                log.warning("job %s: still running; skipping this start (a job never overlaps itself)", name)
                return
            if name in self._queued:
                log.info("job %s: already waiting to run; starts coalesced", name)
                return
            self._queued.add(name)
        self._queue.put(name)

    # -- signals (main thread) --

    def _on_stop_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            raise Cancelled(name)  # a second signal: abort now
        self._stopping = True
        if self._running is None:
            log.info("received %s: stopping", name)
            return
        log.warning(
            "received %s: starting nothing new; job %s may finish within %gs, then it is aborted",
            name, self._running, self.config.stop_timeout,
        )
        if self.config.stop_timeout <= 0:
            raise Cancelled(name)
        self._abort_signal = name
        signal.setitimer(signal.ITIMER_REAL, self.config.stop_timeout)

    def _on_alarm(self, _signum, _frame) -> None:
        if self._running is not None:
            raise Cancelled(getattr(self, "_abort_signal", "SIGTERM"))

    # -- the loop --

    def run_once(self, name: str) -> JobOutcome:
        """Run job ``name`` now, in this thread; record and return its outcome. Cancelled propagates
        only when no run was in progress."""
        job = self.config.jobs[name.removesuffix(VERIFY_SUFFIX)]
        outcome = JobOutcome(name, datetime.now(timezone.utc))
        with self._lock:
            self._queued.discard(name)
            self._running = name
        try:
            try:
                if name.endswith(VERIFY_SUFFIX):
                    run_verify_job(
                        self.docker(), job, self.backends[job.name], self.helper_image(), self.identities, self.progress, outcome,
                    )
                else:
                    run_job(
                        self.docker(), job, self.backends[name], self.helper_image(), self.progress, outcome,
                        encrypt_with=self.encryption_key,
                    )
            except Cancelled as exc:
                outcome.aborted = True
                outcome.errors.append(f"aborted by {exc.signal_name}: the backup was cleaned up and nothing was pruned")
            except Exception as exc:  # daemon unreachable, helper image missing...: this run fails, the next may not
                outcome.errors.append(str(exc) or type(exc).__name__)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            with self._lock:
                self._running = None
        if outcome.finished is None:
            outcome.finished = datetime.now(timezone.utc)
            outcome.duration = (outcome.finished - outcome.started).total_seconds()
        finish_run(self.config, outcome, self.store)
        return outcome

    def _catch_up(self, now: datetime) -> None:
        status = self.store.read()
        for name, job in self.config.jobs.items():
            last = ((status.get(name) or {}).get("last_run") or {}).get("started")
            try:
                started = parse_time(last) if last else None
            except ValueError:
                started = None
            missed = missed_run(job, started, now, self.config.misfire_grace_time)
            if missed is not None:
                log.info("job %s: missed its start at %s while volsafe was down; running it once now", name, missed.isoformat())
                self.request(name)

    def serve(self) -> None:
        """Schedule every job and run them until SIGTERM or SIGINT; return when stopped.

        Installs its own SIGTERM, SIGINT and SIGALRM handlers and restores the previous ones.
        """
        handlers = {signal.SIGTERM: self._on_stop_signal, signal.SIGINT: self._on_stop_signal, signal.SIGALRM: self._on_alarm}
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
        scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": int(self.config.misfire_grace_time)}
        )
        server = None
        try:
            for name, job in self.config.jobs.items():
                scheduler.add_job(self.request, job.trigger(), args=[name], id=name, name=name)
                if job.verify:
                    check = name + VERIFY_SUFFIX
                    scheduler.add_job(self.request, job.verify_trigger(), args=[check], id=check, name=check)
            if self.config.listen:
                server = HealthServer(self.config.listen, self.store.read, self.config.jobs).start()
                log.info("health endpoint on http://%s/health and /metrics", server.address)
            self._catch_up(datetime.now(timezone.utc))
            scheduler.start()
            log.info("scheduler started with %d job(s): %s", len(self.config.jobs), ", ".join(self.config.jobs) or "none")
            self._loop()
        except Cancelled:
            pass  # a second signal while idle: stop just the same
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if scheduler.running:
                scheduler.shutdown(wait=False)
            if server is not None:
                server.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("scheduler stopped")

    def _loop(self) -> None:
        while not self._stopping:
            try:
                # A short timeout so that a stop request is seen promptly.
                name = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if self._stopping:
                break
            self.run_once(name)
