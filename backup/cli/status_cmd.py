"""``volsafe status``: which hosts and volumes have a recent backup in a (shared) store."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import List, Optional

import typer

from backup.actions.overview import human_age
from backup.actions.status import run_status
from backup.archive.hosts import shown
from backup.archive.manifest import format_time
from backup.cli.options import command, from_option, max_age_seconds
from backup.cli.output import print_json, print_table
from backup.config.locations import open_locations
from backup.units import human_size


def status(
    ctx: typer.Context,
    from_: Optional[List[str]] = from_option("read"),
    max_age: str = typer.Option(
        "26h", "--max-age", metavar="DURATION", help="A newest backup older than this is stale (e.g. 26h, 2d)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per host and volume."),
    notify: bool = typer.Option(False, "--notify", help="Also send the 'stale' event to the [notify] routes that take it, if anything is stale."),
) -> None:
    """Show one row per host and volume in the store: newest backup, its age, how many, stored bytes, stale or not.

    Exits 1 when anything is stale (or nothing is stored at all), so a cron job or monitoring check
    can run it against the bucket every host writes to. Reads manifests only; needs no Docker.
    """
    state = ctx.obj
    configured = state.backends  # a config file given or found is read first: a broken one stops here
    threshold = max_age_seconds(max_age)
    backends = open_locations(from_, configured)
    now = datetime.now(timezone.utc)
    rows = run_status(backends, now=now, max_age=threshold)
    if as_json:
        print_json([row.to_json() for row in rows])
    elif rows:
        print_table(
            ["HOST", "VOLUME", "NEWEST", "AGE", "BACKUPS", "STORED", "STATUS"],
            [
                [shown(r.host), r.volume, format_time(r.newest.created), human_age(r.age_seconds), str(r.count),
                 human_size(r.stored_bytes), "STALE" if r.stale else "ok"]
                for r in rows
            ],
        )
    where = ", ".join(b.url for b in backends)
    if not rows:
        print(f"volsafe: no backups in {where}", file=sys.stderr)
        raise typer.Exit(1)
    stale = [r for r in rows if r.stale]
    hosts = sorted({r.host for r in rows})
    print(
        f"volsafe: {len(hosts)} host(s), {len(rows)} host/volume pair(s); {len(stale)} stale (no backup newer than {max_age})",
        file=sys.stderr,
    )
    if stale and notify:
        from backup.jobs.notify import notify_stale  # apprise is loaded only when something is sent

        notify_stale(state.config, stale, max_age=max_age, where=where)
    if stale:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    command(app, "status")(status)
