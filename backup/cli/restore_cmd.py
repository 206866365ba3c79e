"""``volsafe restore``."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from backup.actions.restore import check_to_path, parse_container_target, run_restore
from backup.errors import UsageError
from backup.cli.output import backup_record, print_json
from backup.config.locations import open_locations
from backup.archive.catalog import locate_on_hosts
from backup.cli.hosts import host_choice, source_host_option
from backup.archive.naming import parse_ref
from backup.progress import reporter_for
from backup.cli.keys import identities_for
from backup.cli.state import nonempty
from backup.cli.options import command


def restore(
    ctx: typer.Context,
    ref: str = typer.Argument(
        ..., metavar="REF", help="VOLUME or VOLUME@latest (this host's newest backup of VOLUME), or a backup id as 'list' prints it."
    ),
    from_: Optional[str] = typer.Option(
        None, "--from", metavar="BACKEND",
        help="Backend to restore from: a name from the config, a path or a URL. "
        "[default: the config's [backends] (the one with the newest backup), else ~/.local/share/volsafe/backups]",
        callback=nonempty,
    ),
    to_volume: Optional[str] = typer.Option(
        None, "--to-volume", metavar="NAME", help="Restore into this volume instead of the original name.", callback=nonempty
    ),
    to_path: Optional[str] = typer.Option(
        None, "--to-path", metavar="DIR", help="Restore into this existing directory on the Docker daemon's host instead of a volume.",
        callback=nonempty,
    ),
    to_container: Optional[str] = typer.Option(
        None, "--to-container", metavar="NAME:PATH", help="Restore into PATH of the running container NAME (e.g. a tmpfs mount), with its own tar.",
        callback=nonempty,
    ),
    driver_opts: bool = typer.Option(
        False, "--driver-opts",
        help="Create a new volume with the driver and driver options recorded in the backup (default: the local "
        "driver, no options). A bind or device volume also needs --bind-device.",
    ),
    bind_device: Optional[str] = typer.Option(
        None, "--bind-device", metavar="PATH",
        help="Allow writing into a volume that keeps its data on this host directory or device (o=bind, device=PATH): "
        "must equal the volume's (or, with --driver-opts, the backup's) device option.",
        callback=nonempty,
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
    source_host: Optional[List[str]] = source_host_option("restore from"),
) -> None:
    """Restore a backup into a volume, creating it with its original labels (and, with --driver-opts, driver and options).

    The archive's checksum is verified while it streams. A failed or interrupted restore leaves no
    half-filled volume: a volume it created is removed, and an existing one keeps its old contents.
    A volume that keeps its data on a host path (a bind volume) is written only with --bind-device
    PATH, and never one that shares its data with another volume.

    VOLUME means this host's newest backup of it; if this host has none and exactly one other host
    sharing the store has some, that host's newest (said on stderr); --source-host picks the host.
    """
    state = ctx.obj
    configured = state.config.backends  # a config file given or found is read first: a broken one stops here
    parsed = parse_ref(ref)
    if sum(x is not None for x in (to_volume, to_path, to_container)) > 1:
        raise UsageError("give one of --to-volume, --to-path and --to-container")
    container_target = parse_container_target(to_container) if to_container is not None else None
    if to_path is not None:
        check_to_path(to_path)
    backend, parsed, _manifest = locate_on_hosts(
        open_locations([from_] if from_ else None, configured), parsed, host_choice(state, source_host)
    )
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
        driver_opts=driver_opts,
        bind_devices=(bind_device,) if bind_device else (),
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
