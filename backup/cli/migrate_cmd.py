"""``volsafe migrate``."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from backup.actions.migrate import MigrateOptions, MigrationResult, project_volumes, run_migrate
from backup.cli.output import human_size, print_json, print_table
from backup.cli.options import command
from backup.docker.host import TlsOptions, connect
from backup.errors import UsageError
from backup.docker.helper_image import resolve_helper_image
from backup.config.locations import open_locations
from backup.docker.locks import DEFAULT_WAIT
from backup.progress import reporter_for
from backup.cli.state import nonempty


def migrate(
    ctx: typer.Context,
    volumes: Optional[List[str]] = typer.Argument(None, metavar="VOLUME", help="Volumes to move (or --project)."),
    to_host: str = typer.Option(
        ..., "--to-host", metavar="DST",
        help="Target daemon: unix://…, tcp://HOST:PORT, ssh://USER@HOST[:PORT], or a Docker context name.",
        callback=nonempty,
    ),
    to_volume: Optional[str] = typer.Option(
        None, "--to-volume", metavar="NAME", help="Name of the target volume (one VOLUME only).", callback=nonempty
    ),
    project: Optional[str] = typer.Option(
        None, "--project", metavar="NAME", help="Move every volume labelled com.docker.compose.project=NAME.", callback=nonempty
    ),
    force: bool = typer.Option(False, "--force", help="Replace the contents of target volumes that are not empty."),
    stop: bool = typer.Option(False, "--stop", help="Stop the source containers using the volumes for the duration."),
    no_restart: bool = typer.Option(
        False, "--no-restart", help="With --stop: leave them stopped after a successful migration (a cut-over)."
    ),
    via: Optional[str] = typer.Option(
        None, "--via", metavar="BACKEND",
        help="Go through a backend (directory, file:// or s3:// URL, restic:REPOSITORY, or [backends] name): backup on the source, "
        "restore on the target. A restic repository gets a streamed snapshot (the volume's tar), which any daemon can restore.",
        callback=nonempty,
    ),
    bind_device: Optional[List[str]] = typer.Option(
        None, "--bind-device", metavar="PATH",
        help="Allow a target volume that keeps its data on this host directory or device of the target's host "
        "(a bind volume: o=bind, device=PATH), as the source's options create it or as it exists (repeatable).",
        callback=nonempty,
    ),
    keep_compose_labels: bool = typer.Option(
        False, "--keep-compose-labels",
        help="Give a target with another name (--to-volume) the source's com.docker.compose.* labels too (left out by default).",
    ),
    to_tlsverify: bool = typer.Option(False, "--to-tlsverify", help="Use TLS to the target and verify its certificate."),
    to_tlscacert: Optional[str] = typer.Option(None, "--to-tlscacert", metavar="FILE", help="CA certificate for the target."),
    to_tlscert: Optional[str] = typer.Option(None, "--to-tlscert", metavar="FILE", help="Client certificate for the target."),
    to_tlskey: Optional[str] = typer.Option(None, "--to-tlskey", metavar="FILE", help="Client key for the target."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON; no progress bar."),
    lock_wait: float = typer.Option(
        DEFAULT_WAIT, "--lock-wait", min=0, metavar="SECONDS",
        help="How long to wait for another volsafe backing up or restoring a source or target volume.",
    ),
) -> None:
    """Move volumes to another Docker host, verified, with their labels, driver and options.

    By default the tar streams directly from a read-only helper on the source into a helper on the
    target, and volsafe compares a digest of what it sent with one computed on the target from
    what its tar read. Nothing is swapped in until every volume arrived intact; a failed
    migration leaves the targets as they were, and the source is never changed.

    A target volume that would keep its data on a host directory or device (a bind volume) needs
    --bind-device PATH, and none is written where another volume keeps its data.
    """
    state = ctx.obj
    configured = state.backends  # a config file given or found is read first: a broken one stops here
    if bool(volumes) == bool(project):
        raise UsageError("name the volumes to move, or --project NAME (not both)")
    if no_restart and not stop:
        raise UsageError("--no-restart only makes sense with --stop")
    backend = open_locations([via], configured)[0] if via else None
    source = state.docker
    names = project_volumes(source, project) if project else list(volumes or ())
    target = connect(to_host, TlsOptions(to_tlsverify, to_tlscacert, to_tlscert, to_tlskey))
    try:
        options = MigrateOptions(
            source_image=state.helper_image,
            # A target without a helper image gets the source's, through the Docker API (no registry).
            target_image=resolve_helper_image(
                target, state.helper_image_option or state.config.helper_image, ship_from=(source, state.helper_image)
            ),
            force=force,
            stop=stop,
            restart=not no_restart,
            lock_wait=lock_wait,
            bind_devices=tuple(bind_device or ()),
            keep_compose_labels=keep_compose_labels,
        )
        result = run_migrate(
            source, target, names, options=options, to_volume=to_volume, via=backend, progress=reporter_for(quiet=as_json)
        )
    finally:
        target.close()
    _report(result, source.url, target.url, as_json)
    if result.restart_problems:
        raise typer.Exit(1)


def _report(result: MigrationResult, source_url: str, target_url: str, as_json: bool) -> None:
    """Print one stderr line per volume and a summary; the table (or JSON) on stdout."""
    for problem in result.restart_problems:
        print(f"volsafe: error: {problem}", file=sys.stderr)
    if as_json:
        print_json(_record(result, source_url, target_url))
        return
    for v in result.volumes:
        print(
            f"volsafe: migrated {v.source} -> {v.target} on {target_url} ({v.entries} entries, {human_size(v.tar_size)}, "
            f"{v.seconds:.1f} s, verified {'yes' if v.verified else 'no'})",
            file=sys.stderr,
        )
    if result.left_stopped:
        print(f"volsafe: left stopped on the source (--no-restart): {', '.join(result.left_stopped)}", file=sys.stderr)
    rows = [[v.source, v.target, human_size(v.tar_size), f"{v.seconds:.1f}", "yes" if v.verified else "no"] for v in result.volumes]
    print_table(["VOLUME", "TARGET", "SIZE", "SECONDS", "VERIFIED"], rows)
    typer.echo(
        f"{len(result.volumes)} volume(s), {human_size(result.bytes)}, {result.seconds:.1f} s, "
        f"verified {'yes' if result.verified else 'no'} ({result.mode}, {source_url} -> {target_url})"
    )


def _record(result: MigrationResult, source_url: str, target_url: str) -> dict:
    """Return the JSON object ``migrate --json`` prints."""
    return {
        "mode": result.mode,
        "source_host": source_url,
        "target_host": target_url,
        "volumes": [
            {
                "volume": v.source,
                "target_volume": v.target,
                "created_volume": v.created_volume,
                "size": v.tar_size,
                "entries": v.entries,
                "seconds": round(v.seconds, 3),
                "digest": v.digest,
                "digest_sent": v.sent_digest,
                "digest_received": v.received_digest,
                "verified": v.verified,
                **({"backup_id": v.backup_id} if v.backup_id else {}),
            }
            for v in result.volumes
        ],
        "bytes": result.bytes,
        "seconds": round(result.seconds, 3),
        "verified": result.verified,
        "left_stopped": result.left_stopped,
    }


def register(app: typer.Typer) -> None:
    command(app, "migrate")(migrate)
