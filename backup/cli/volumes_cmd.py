"""``volsafe volumes``: every volume, what uses it, and its newest backup on each backend."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from backup.actions.volumes import run_volumes
from backup.cli.output import print_json
from backup.cli.options import command, from_option, max_age_seconds
from backup.config.locations import open_locations
from backup.actions.overview import human_age
from backup.units import human_size


def volumes(
    ctx: typer.Context,
    from_: Optional[List[str]] = from_option("look for backups in"),
    max_age: str = typer.Option("24h", "--max-age", metavar="DURATION", help="A newest backup older than this is highlighted (e.g. 36h, 7d)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per volume."),
) -> None:
    """Show every volume: size, driver, containers (running or not), Compose project, newest backup per backend and its age.

    Only this host's backups count (as 'list' shows in HOST, and those that record no host): in a
    store shared by several hosts, another host's backup of a volume with the same name does not.

    Volumes with no backup, or none newer than --max-age, are highlighted (in red on a terminal;
    "stale": true in --json).
    """
    state = ctx.obj
    configured = state.backends  # a config file given or found is read first: a broken one stops here
    threshold = max_age_seconds(max_age)
    backends = open_locations(from_, configured)
    rows = run_volumes(state.docker, backends, max_age=threshold, this_host=state.this_host())
    if as_json:
        print_json([row.to_json() for row in rows])
        return
    if not rows:
        typer.echo("no volumes", err=True)
        return
    names = [b.url for b in backends]
    headers = ["VOLUME", "SIZE", "DRIVER", "PROJECT", "CONTAINERS", *[f"NEWEST {n}" for n in names]]
    table = [headers]
    for row in rows:
        used = ", ".join(f"{name}{'' if running else ' (stopped)'}" for name, running in row.containers) or "-"
        newest = [f"{human_age(n.age_seconds)} ago" if n.backup_id else "never" for n in row.newest]
        table.append([row.name, human_size(row.size) if row.size is not None else "?", row.driver, row.project or "-", used, *newest])
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    color = sys.stdout.isatty()
    for index, cells in enumerate(table):
        line = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        stale = index > 0 and rows[index - 1].stale
        if stale:
            line = typer.style(line, fg="red", bold=True) if color else line + "  !"
        typer.echo(line)
    missing = sum(1 for r in rows if r.stale)
    if missing:
        typer.echo(f"volsafe: {missing} of {len(rows)} volumes have no backup newer than {max_age}", err=True)


def register(app: typer.Typer) -> None:
    command(app, "volumes")(volumes)
