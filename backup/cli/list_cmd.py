"""``volsafe list``."""

from __future__ import annotations

from typing import List, Optional

import typer

from backup.actions.listing import run_list
from backup.cli.output import backup_record, print_backups, print_json
from backup.cli.options import command, from_option
from backup.config.locations import open_locations
from backup.archive.naming import validate_volume_name
from backup.cli.hosts import source_host_option


def list_backups(
    ctx: typer.Context,
    volume: Optional[str] = typer.Argument(None, metavar="VOLUME", help="Only list backups of this volume."),
    from_: Optional[List[str]] = from_option("read"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per backup."),
    source_host: Optional[List[str]] = source_host_option("list"),
) -> None:
    """List complete backups, oldest first. Interrupted backups are never listed."""
    configured = ctx.obj.backends  # a config file given or found is read first: a broken one stops here
    if volume is not None:
        validate_volume_name(volume)
    rows = run_list(open_locations(from_, configured), volume, tuple(source_host or ()))
    records = [backup_record(r.manifest, r.backend) for r in rows]
    if as_json:
        print_json(records)
    elif records:
        print_backups(records)
    else:
        typer.echo("no backups found", err=True)


def register(app: typer.Typer) -> None:
    command(app, "list")(list_backups)
