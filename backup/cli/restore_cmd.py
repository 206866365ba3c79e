"""``volsafe restore``."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from backup.actions.restore import parse_container_target, run_restore
from backup.errors import UsageError
from backup.cli.output import backup_record, print_json
from backup.config.locations import open_locations
from backup.archive.naming import parse_ref
from backup.progress import reporter_for
from backup.cli.keys import identities_for
from backup.cli.options import command


def restore(
    ctx: typer.Context,
    ref: str = typer.Argument(
        ..., metavar="REF", help="VOLUME or VOLUME@latest (the newest backup of VOLUME), or a backup id as 'list' prints it."
    ),
    from_: Optional[str] = typer.Option(
        None, "--from", metavar="BACKEND", help="Backend to restore from. [default: ~/.local/share/volsafe/backups]"
    ),
    to_volume: Optional[str] = typer.Option(
        None, "--to-volume", metavar="NAME", help="Restore into this volume instead of the original name."
    ),
    to_path: Optional[str] = typer.Option(
        None, "--to-path", metavar="DIR", help="Restore into this existing directory on the Docker daemon's host instead of a volume."
    ),
    to_container: Optional[str] = typer.Option(
        None, "--to-container", metavar="NAME:PATH", help="Restore into PATH of the running container NAME (e.g. a tmpfs mount), with its own tar."
    ),
    force: bool = typer.Option(False, "--force", help="Replace the contents of a target that is not empty."),
    as_json: bool = typer.Option(False, "--json", help="Print what was restored as JSON; no progress bar."),
    identity: Optional[List[str]] = typer.Option(
        None, "--identity", "-i", metavar="FILE", help="age identity file or SSH private key for an encrypted backup (repeatable). [default: [encryption] identity_files]"
    ),
    passphrase_file: Optional[str] = typer.Option(
        None, "--passphrase-file", metavar="FILE",
        help="Passphrase (FILE's first line) for a backup encrypted with one. [default: $VOLSAFE_PASSPHRASE, [encryption] passphrase_file]",
    ),
) -> None:
    """Restore a backup into a volume, creating it with its original labels, driver and options.

    The archive's checksum is verified while it streams. A failed or interrupted restore leaves no
    half-filled volume: a volume it created is removed, and an existing one keeps its old contents.
    """
    state = ctx.obj
    parsed = parse_ref(ref)
    if sum(x is not None for x in (to_volume, to_path, to_container)) > 1:
        raise UsageError("give one of --to-volume, --to-path and --to-container")
    container_target = parse_container_target(to_container) if to_container is not None else None
    (backend,) = open_locations([from_] if from_ else None)
    outcome = run_restore(
        state.docker,
        backend,
        parsed,
        helper_image=state.helper_image,
        to_volume=to_volume,
        force=force,
        progress=reporter_for(quiet=as_json),
        identities=identities_for(state, identity, passphrase_file),
        to_path=to_path,
        to_container=container_target,
    )
    if as_json:
        record = backup_record(outcome.manifest, outcome.backend)
        print_json([{**record, "restored_to": outcome.volume, "created_volume": outcome.created_volume}])
    else:
        where = {"volume": "volume ", "path": "directory ", "container": "container path "}[outcome.target_kind]
        print(f"volsafe: restored {outcome.manifest.backup_id} into {where}{outcome.volume}", file=sys.stderr)
        typer.echo(outcome.volume)


def register(app: typer.Typer) -> None:
    command(app, "restore")(restore)
