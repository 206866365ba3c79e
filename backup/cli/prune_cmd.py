"""``volsafe prune``: remove old backups by a restic-style retention policy."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import List, Optional

import tzlocal
import typer

from backup.actions.prune import run_prune
from backup.cli.output import print_json, print_table
from backup.cli.options import command, from_option
from backup.errors import UsageError
from backup.config.locations import open_locations
from backup.archive.manifest import format_time
from backup.archive.naming import validate_volume_name
from backup.jobs.retention import Policy
from backup.jobs.schedule import timezone_of
from backup.cli.hosts import all_hosts_option, source_host_option
from backup.archive.hosts import host_filter, shown


def _keep(flag: str, period: str) -> int:
    return typer.Option(0, flag, min=0, metavar="N", help=f"Keep the newest backup of each of the last N {period} that have one.")


def prune(
    ctx: typer.Context,
    volume: Optional[str] = typer.Argument(None, metavar="VOLUME", help="Only prune backups of this volume [default: every volume]."),
    from_: Optional[List[str]] = from_option("prune"),
    keep_last: int = typer.Option(0, "--keep-last", min=0, metavar="N", help="Keep the N newest backups."),
    keep_hourly: int = _keep("--keep-hourly", "hours"),
    keep_daily: int = _keep("--keep-daily", "days"),
    keep_weekly: int = _keep("--keep-weekly", "ISO weeks"),
    keep_monthly: int = _keep("--keep-monthly", "months"),
    keep_yearly: int = _keep("--keep-yearly", "years"),
    zone: Optional[str] = typer.Option(None, "--timezone", metavar="TZ", help="Time zone of the periods [default: local]."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would be kept and removed, and why."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per backup."),
    source_host: Optional[List[str]] = source_host_option("prune"),
    all_hosts: bool = all_hosts_option(),
) -> None:
    """Remove the backups that no keep rule keeps, per host, volume and backend (restic's semantics).

    Each rule keeps the newest backup of each of its last N periods; a backup any rule keeps stays.
    The newest backup is never removed. The manifest goes first, so no half-removed backup is listed.
    Only this host's backups are touched ($VOLSAFE_HOST_NAME, [docker] host_name, else the Docker
    daemon's name) unless --source-host or --all-hosts says otherwise.
    """
    configured = ctx.obj.backends  # a config file given or found is read first: a broken one stops here
    if volume is not None:
        validate_volume_name(volume)
    policy = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly)
    if policy.empty:
        raise UsageError("give at least one keep rule (--keep-last, --keep-daily, ...); prune never removes everything")
    try:
        tz = timezone_of(zone) if zone else tzlocal.get_localzone()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    backends = open_locations(from_, configured)
    hosts = host_filter(source_host or (), all_hosts, ctx.obj.this_host)
    results = run_prune(
        backends, policy, volumes=[volume] if volume else None, now=datetime.now(timezone.utc), tz=tz, dry_run=dry_run, hosts=hosts
    )

    def action(r) -> str:
        if r.decision.keep:
            return "keep"
        return "remove" if dry_run else ("removed" if r.removed else "failed")

    records = [
        {"id": r.decision.id, "volume": r.manifest.volume, "source_host": r.manifest.source_hostname, "created": format_time(r.manifest.created), "backend": r.backend.url,
         "action": action(r), "reason": r.decision.reason, **({"error": r.error} if r.error else {})}
        for r in results
    ]
    if as_json:
        print_json(records)
    elif records:
        print_table(
            ["ACTION", "ID", "HOST", "CREATED", "BACKEND", "REASON"],
            [[r["action"], r["id"], shown(r["source_host"]), r["created"], r["backend"], r["reason"]] for r in records],
        )
    else:
        typer.echo("no backups found" + (f" from host {', '.join(hosts)}" if hosts else ""), err=True)
    kept = sum(1 for r in results if r.decision.keep)
    gone = len(results) - kept
    if dry_run:
        print(f"volsafe: dry run: would keep {kept} and remove {gone} backup(s) ({policy.describe()})", file=sys.stderr)
    else:
        failed = sum(1 for r in results if r.error)
        print(f"volsafe: kept {kept}, removed {gone - failed} backup(s) ({policy.describe()})", file=sys.stderr)
        if failed:
            for r in results:
                if r.error:
                    print(f"volsafe: error: could not remove {r.decision.id} from {r.backend.url}: {r.error}", file=sys.stderr)
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    command(app, "prune")(prune)
