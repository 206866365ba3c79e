"""``volsafe jobs list`` and ``volsafe jobs run NAME``."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import typer

from backup.actions.job import JobOutcome, run_job
from backup.cli.output import human_size, print_json, print_table
from backup.cli.options import command
from backup.config.schema import JobConfig
from backup.crypto.encryption import configured_key
from backup.errors import NotFoundError
from backup.jobs.health import StatusStore
from backup.progress import reporter_for

jobs_app = typer.Typer(help="List the configured jobs, or run one now.", no_args_is_help=True, rich_markup_mode=None)


def next_runs(job: JobConfig, now: datetime, count: int) -> list[datetime]:
    """Return the job's next ``count`` start times after ``now``, before any jitter."""
    trigger = job.trigger(jitter=False)
    times: list[datetime] = []
    previous = None
    while len(times) < count:
        upcoming = trigger.get_next_fire_time(previous, previous or now)
        if upcoming is None:
            break
        times.append(upcoming)
        previous = upcoming
    return times


@command(jobs_app, "list")
def list_jobs(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per job."),
) -> None:
    """Show each job's schedule, next run and last results (from the status file)."""
    cfg = ctx.obj.config
    status = StatusStore(cfg.status_file).read()
    now = datetime.now(timezone.utc)
    records = []
    for job in cfg.jobs.values():
        entry = status.get(job.name) or {}
        last = entry.get("last_run") or {}
        upcoming = next_runs(job, now, 1)
        records.append({
            "job": job.name,
            "schedule": job.schedule,
            "next_run": upcoming[0].isoformat(timespec="seconds") if upcoming else None,
            "last_result": last.get("result"),
            "last_run": last.get("started"),
            "last_success": (entry.get("last_success") or {}).get("finished"),
            "last_failure": (entry.get("last_failure") or {}).get("finished"),
            "last_error": (last.get("errors") or [None])[0],
            "last_bytes": last.get("bytes"),
        })
    if as_json:
        print_json(records)
    elif records:
        print_table(
            ["JOB", "SCHEDULE", "NEXT RUN", "LAST RESULT", "LAST SUCCESS", "LAST FAILURE"],
            [[r["job"], r["schedule"], r["next_run"] or "-", r["last_result"] or "never run", r["last_success"] or "-",
              r["last_failure"] or "-"] for r in records],
        )
    else:
        typer.echo("no jobs configured" + ("" if cfg.path else " (no config file found)"), err=True)


@command(jobs_app, "run")
def run_now(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The job to run, as [jobs.NAME] in the config."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's outcome as JSON; no progress bar."),
) -> None:
    """Run one job now, in the foreground: back up its volumes, then (if all went well) prune.

    The outcome is recorded in the status file and sent to the webhook like a scheduled run's.
    """
    state = ctx.obj
    cfg = state.config
    job = cfg.jobs.get(name)
    if job is None:
        known = ", ".join(cfg.jobs) or "none"
        raise NotFoundError(f"no job named {name!r} in {cfg.path or 'the config (no config file found)'} (jobs: {known})")
    from backup.jobs.scheduler import finish_run, job_backends  # the scheduler's machinery: only for this command

    backends = job_backends(cfg, job)
    key = configured_key(cfg)  # a bad key file stops here, before any work
    outcome = JobOutcome(name, datetime.now(timezone.utc))
    try:
        run_job(
            state.docker, job, backends, state.helper_image, reporter_for(quiet=as_json), outcome, encrypt_with=key
        )
    except BaseException:
        outcome.aborted = True
        outcome.errors.append("interrupted")
        finish_run(cfg, outcome, log_line=False)
        raise
    summary = finish_run(cfg, outcome, log_line=False)
    if as_json:
        print_json(summary)
    else:
        print_table(
            ["JOB", "RESULT", "VOLUMES", "STORED", "SECONDS", "PRUNED"],
            [[name, outcome.result, str(len(outcome.volumes)), human_size(outcome.bytes), f"{outcome.duration:.1f}", str(outcome.removed)]],
        )
        for error in outcome.errors:
            print(f"volsafe: error: job {name}: {error}", file=sys.stderr)
    if not outcome.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
