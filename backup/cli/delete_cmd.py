"""``volsafe delete``: remove backups by exact id."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from backup.actions.delete import Deletion, run_delete
from backup.archive.manifest import format_time
from backup.archive.naming import parse_backup_id
from backup.cli.options import command, from_option
from backup.cli.output import print_json, print_table
from backup.config.locations import open_locations
from backup.units import human_size


def delete(
    ctx: typer.Context,
    ids: List[str] = typer.Argument(..., metavar="ID", help="Backup ids as 'volsafe list' prints them (VOLUME@STAMP)."),
    from_: Optional[List[str]] = from_option("delete from"),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would be deleted."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per backup and backend."),
) -> None:
    """Delete backups by exact id, from every backend searched that holds them.

    Every id is looked up first: if one is on none of the backends, nothing is deleted (exit 1).
    The manifest goes first, then the archive, so no half-deleted backup is ever listed. To
    remove backups by age, use 'volsafe prune'.
    """
    configured = ctx.obj.backends  # a config file given or found is read first: a broken one stops here
    backup_ids = [parse_backup_id(text) for text in ids]  # a malformed id is a usage error before any backend is opened
    deletions = run_delete(open_locations(from_, configured), backup_ids, dry_run=dry_run)
    records = [_record(d, dry_run) for d in deletions]
    if as_json:
        print_json(records)
    else:
        print_table(
            ["ACTION", "ID", "CREATED", "SIZE", "BACKEND"],
            [[r["action"], r["id"], r["created"] or "?", human_size(r["size"]) if r["size"] is not None else "?", r["backend"]]
             for r in records],
        )
    failed = [d for d in deletions if d.error]
    if dry_run:
        print(f"volsafe: dry run: would delete {len(deletions)} backup(s); nothing was deleted", file=sys.stderr)
        return
    print(f"volsafe: deleted {len(deletions) - len(failed)} backup(s)", file=sys.stderr)
    for d in failed:
        print(f"volsafe: error: could not delete {d.backup_id} from {d.backend.url}: {d.error}", file=sys.stderr)
    if failed:
        raise typer.Exit(1)


def _record(d: Deletion, dry_run: bool) -> dict:
    """Return the JSON object ``delete --json`` prints for one backup on one backend."""
    return {
        "id": str(d.backup_id),
        "volume": d.backup_id.volume,
        "created": format_time(d.manifest.created) if d.manifest else None,
        "size": d.manifest.tar_size if d.manifest else None,
        "backend": d.backend.url,
        "action": "delete" if dry_run else ("deleted" if d.removed else "failed"),
        **({"error": d.error} if d.error else {}),
    }


def register(app: typer.Typer) -> None:
    command(app, "delete")(delete)
