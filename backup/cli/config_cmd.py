"""``volsafe config check``: validate the config file and show the jobs with their next runs."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

import typer

from backup.cli.jobs_cmd import next_runs
from backup.cli.output import print_json, print_table
from backup.cli.options import command
from backup.config.schema import key_values
from backup.jobs.retention import Policy

config_app = typer.Typer(help="Check the configuration file.", no_args_is_help=True, rich_markup_mode=None)


@command(config_app, "check")
def check(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the jobs as a JSON array."),
) -> None:
    """Validate the config, listing every error at once; print each job with its next run times and
    every key it sets (--json: every key, set or default)."""
    cfg = ctx.obj.config
    if cfg.path is None:
        print("volsafe: no config file found; the built-in defaults apply (no jobs, no named backends)", file=sys.stderr)
    else:
        print(f"volsafe: {cfg.path} is valid: {len(cfg.backends)} backend(s), {len(cfg.jobs)} job(s)", file=sys.stderr)
    now = datetime.now(timezone.utc)
    rows, settings = [], []
    for job in cfg.jobs.values():
        declared = key_values(job)  # every [jobs.NAME] key, as the schema declares them
        row: dict[str, Any] = {"job": job.name, "next_runs": [t.isoformat(timespec="seconds") for t in next_runs(job, now, 3)]}
        row.update((name, _json_value(value)) for name, value, _default in declared)
        row["backends"] = row["backends"] or ["(default directory)"]
        rows.append(row)
        settings.append(" ".join(
            f"{name}={_shown(value)}" for name, value, default in declared if not default and name not in _COLUMNS
        ))
    if as_json:
        print_json(rows)
        return
    if rows:
        print_table(
            ["JOB", "SCHEDULE", "NEXT RUN", "VOLUMES", "BACKENDS", "RETENTION", "SETTINGS"],
            [[r["job"], r["schedule"] + (f" ({r['timezone']})" if r["timezone"] else ""), (r["next_runs"] or ["never"])[0],
              ",".join(
                  (["all"] if r["all_volumes"] else []) + r["volumes"] + [f"project:{p}" for p in r["projects"]]
                  + [f"label:{k}={v}" for k, v in r["volume_labels"].items()]
              ),
              ",".join(r["backends"]), r["retention"], other] for r, other in zip(rows, settings, strict=True)],
        )


# Keys the table shows in a column of their own; every other key that is set goes to SETTINGS.
_COLUMNS = {"schedule", "timezone", "volumes", "volume_labels", "all_volumes", "projects", "backends", "retention"}


def _json_value(value: Any) -> Any:
    if isinstance(value, Policy):
        return value.describe()
    if isinstance(value, tuple):
        return list(value)
    return value


def _shown(value: Any) -> str:
    """A key's value as the table shows it (durations are seconds)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, Policy):
        return value.describe()
    return json.dumps(value) if isinstance(value, str) and (" " in value or not value) else str(value)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
