"""``volsafe restore``."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from backup.actions.restore import check_to_path, parse_container_target, run_restore
from backup.actions.restore_set import locate_refs, project_refs, run_restore_set
from backup.errors import UsageError
from backup.cli.output import backup_record, print_json
from backup.config.locations import open_locations
from backup.archive.catalog import locate_on_hosts
from backup.cli.hosts import host_choice, source_host_option
from backup.archive.naming import parse_ref
from backup.progress import reporter_for
from backup.cli.keys import identities_for, identity_option, passphrase_file_option
from backup.cli.options import click_exceptions, command, from_option, switch_option, value_option


def restore(
    ctx: typer.Context,
    refs: Optional[List[str]] = typer.Argument(
        None, metavar="REF",
        help="VOLUME or VOLUME@latest (this host's newest backup of VOLUME), or a backup id as 'list' prints it. Several: "
        "each into its own volume name, under one --stop/--pause.",
    ),
    project: Optional[str] = value_option(
        "--project", "NAME",
        "Restore every volume whose backups carry this Compose project (label com.docker.compose.project), "
        "each from this host's newest backup (chosen among hosts as for VOLUME), into its own name (created if missing, "
        "with its Compose labels).",
    ),
    stop: bool = switch_option(
        "--stop", "Stop the running containers that use a target volume during the restore (once for all), then start them."
    ),
    pause: bool = switch_option("--pause", "Pause those containers instead of stopping them."),
    keep_compose_labels: bool = switch_option(
        "--keep-compose-labels",
        "Give a new volume with another name the backup's com.docker.compose.* labels too (left out by default, "
        "so that a renamed copy does not join the Compose project).",
    ),
    from_: Optional[str] = from_option("restore from", repeatable=False, which=" (the one with the newest backup)"),
    to_volume: Optional[str] = value_option("--to-volume", "NAME", "Restore into this volume instead of the original name."),
    to_path: Optional[str] = value_option(
        "--to-path", "DIR", "Restore into this existing directory on the Docker daemon's host instead of a volume."
    ),
    to_container: Optional[str] = value_option(
        "--to-container", "NAME:PATH", "Restore into PATH of the running container NAME (e.g. a tmpfs mount), with its own tar."
    ),
    driver_opts: bool = switch_option(
        "--driver-opts",
        "Create a new volume with the driver and driver options recorded in the backup (default: the local "
        "driver, no options). A bind or device volume also needs --bind-device.",
    ),
    bind_device: Optional[str] = value_option(
        "--bind-device", "PATH",
        "Allow writing into a volume that keeps its data on this host directory or device (o=bind, device=PATH): "
        "must equal the volume's (or, with --driver-opts, the backup's) device option.",
    ),
    force: bool = switch_option("--force", "Replace the contents of a target that is not empty."),
    as_json: bool = switch_option("--json", "Print what was restored as JSON; no progress bar."),
    identity: Optional[List[str]] = identity_option("an encrypted backup"),
    passphrase_file: Optional[str] = passphrase_file_option("Passphrase (FILE's first line) for a backup encrypted with one."),
    source_host: Optional[List[str]] = source_host_option("restore from"),
) -> None:
    """Restore a backup into a volume, creating it with its original labels (and, with --driver-opts, driver and options).

    Under another name (--to-volume), the com.docker.compose.* labels are left out unless
    --keep-compose-labels, so that the copy does not join the Compose project.

    The archive's checksum is verified while it streams. A failed or interrupted restore leaves no
    half-filled volume: a volume it created is removed, and an existing one keeps its old contents.
    A volume that keeps its data on a host path (a bind volume) is written only with --bind-device
    PATH, and never one that shares its data with another volume.

    VOLUME means this host's newest backup of it; if this host has none and exactly one other host
    sharing the store has some, that host's newest (said on stderr); --source-host picks the host.

    A volume that a running container uses is not written unless --stop or --pause holds the
    container still (it is brought back on every path). Several REFs, or --project NAME, restore a
    set of volumes under one quiesce, with one summary.
    """
    state = ctx.obj
    configured = state.backends  # a config file given or found is read first: a broken one stops here
    refs = list(refs or [])
    if not refs and project is None:
        raise click_exceptions.UsageError("Missing argument 'REF'.", ctx=ctx)
    if stop and pause:
        raise UsageError("give --stop or --pause, not both")
    quiesce = "pause" if pause else ("stop" if stop else "none")
    if quiesce != "none" and (to_path is not None or to_container is not None):
        raise UsageError("--stop and --pause hold the containers of a target volume still; not with --to-path or --to-container")
    if project is not None or len(refs) > 1:
        if project is not None and refs:
            raise UsageError("give REFs or --project, not both")
        if any(x is not None for x in (to_volume, to_path, to_container)):
            raise UsageError("--to-volume, --to-path and --to-container restore one REF; each of several goes into its own name")
        if source_host and project is None:
            raise UsageError("--source-host picks the host of one REF or of --project; give an exact id for each of several")
        _restore_set(
            state, configured, from_, refs, project, source_host, quiesce=quiesce, force=force, as_json=as_json, identity=identity,
            passphrase_file=passphrase_file, driver_opts=driver_opts, bind_device=bind_device, keep_compose_labels=keep_compose_labels,
        )
        return
    parsed = parse_ref(refs[0])
    if sum(x is not None for x in (to_volume, to_path, to_container)) > 1:
        raise UsageError("give one of --to-volume, --to-path and --to-container")
    container_target = parse_container_target(to_container) if to_container is not None else None
    if to_path is not None:
        check_to_path(to_path)
    backend, parsed, manifest = locate_on_hosts(
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
        quiesce=quiesce,
        keep_compose_labels=keep_compose_labels,
        manifest=manifest,
    )
    if as_json:
        record = backup_record(outcome.manifest, outcome.backend)
        print_json([{**record, "restored_to": outcome.volume, "created_volume": outcome.created_volume}])
    else:
        where = {"volume": "volume ", "path": "directory ", "container": "container path "}[outcome.target_kind]
        print(f"volsafe: restored {outcome.manifest.backup_id} into {where}{outcome.volume}", file=sys.stderr)
        typer.echo(outcome.volume)


def _restore_set(
    state, configured, from_, refs, project, source_host, *, quiesce, force, as_json, identity, passphrase_file, driver_opts, bind_device,
    keep_compose_labels,
) -> None:
    """Restore several REFs, or a Compose project, under one quiesce; print one summary."""
    backends = open_locations([from_] if from_ else None, configured)
    hosts = host_choice(state, source_host)
    wanted = project_refs(backends, project, hosts) if project is not None else locate_refs(backends, refs, hosts)
    if project is not None and not as_json:
        print(f"volsafe: project {project}: {', '.join(ref.volume for _, ref in wanted)}", file=sys.stderr)
    result = run_restore_set(
        state.docker, wanted, helper_image=state.helper_image, force=force, quiesce=quiesce,
        progress=reporter_for(quiet=as_json), identities=identities_for(state, identity, passphrase_file),
        driver_opts=driver_opts, bind_devices=(bind_device,) if bind_device else (), keep_compose_labels=keep_compose_labels,
    )
    if as_json:
        print_json([
            {**backup_record(o.manifest, o.backend), "restored_to": o.volume, "created_volume": o.created_volume}
            for o in result.restored
        ])
    else:
        for o in result.restored:
            print(f"volsafe: restored {o.manifest.backup_id} into volume {o.volume}{' (created)' if o.created_volume else ''}", file=sys.stderr)
        for o in result.restored:
            typer.echo(o.volume)
    for what, reason in result.failures.items():
        print(f"volsafe: error: {what}: {reason}", file=sys.stderr)
    if not as_json:
        print(f"volsafe: restored {len(result.restored)} of {len(wanted)} volume(s)", file=sys.stderr)
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    command(app, "restore")(restore)
