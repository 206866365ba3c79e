"""``volsafe config check``: validate the config file and show the jobs with their next runs."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import typer

from backup.cli.jobs_cmd import next_runs
from backup.cli.output import print_table
from backup.cli.options import command

config_app = typer.Typer(help="Check the configuration file.", no_args_is_help=True, rich_markup_mode=None)


@command(config_app, "check")
def check(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the jobs as a JSON array."),
) -> None:
    """Validate the config, listing every error at once; print each job with its next run times."""
    cfg = ctx.obj.config
    if cfg.path is None:
        print("volsafe: no config file found; the built-in defaults apply (no jobs, no named backends)", file=sys.stderr)
    else:
        print(f"volsafe: {cfg.path} is valid: {len(cfg.backends)} backend(s), {len(cfg.jobs)} job(s)", file=sys.stderr)
    now = datetime.now(timezone.utc)
    rows = []
    for job in cfg.jobs.values():
        rows.append({
            "job": job.name,
            "schedule": job.schedule,
            "timezone": job.timezone,
            "next_runs": [t.isoformat(timespec="seconds") for t in next_runs(job, now, 3)],
            "volumes": list(job.volumes),
            "volume_labels": dict(job.volume_labels),
            "backends": list(job.backends) or ["(default directory)"],
            "retention": job.retention.describe(),
            "stop_containers": job.stop_containers,
            "pause_containers": job.pause_containers,
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if rows:
        print_table(
            ["JOB", "SCHEDULE", "NEXT RUN", "VOLUMES", "BACKENDS", "RETENTION"],
            [[r["job"], r["schedule"] + (f" ({r['timezone']})" if r["timezone"] else ""), (r["next_runs"] or ["never"])[0],
              ",".join(r["volumes"] + [f"label:{k}={v}" for k, v in r["volume_labels"].items()]),
              ",".join(r["backends"]), r["retention"]] for r in rows],
        )


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
