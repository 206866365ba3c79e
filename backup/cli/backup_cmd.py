"""``volsafe backup``."""

from __future__ import annotations

import logging
import sys
from typing import List, Optional

import typer

from backup.actions.backup import BackupOptions, backup_plan, run_backup
from backup.actions.select import container_mounts, merge_mounts, resolve_volumes
from backup.cli.output import backup_record, human_size, print_backups, print_json
from backup.errors import UsageError
from backup.config.locations import open_locations
from backup.config.schema import key_named
from backup.docker.locks import DEFAULT_WAIT
from backup.archive.naming import validate_volume_name
from backup.progress import reporter_for
from backup.selectors import VolumeSelector, parse_label, split_excludes
from backup.cli.keys import recipients_for
from backup.cli.state import nonempty
from backup.cli.options import command

log = logging.getLogger("volsafe")
# Bounds and defaults as for a job's keys of the same meaning.
_LEVEL = key_named("jobs", "compression_level")
_CONCURRENCY = key_named("jobs", "concurrency")


def backup(
    ctx: typer.Context,
    volumes: Optional[List[str]] = typer.Argument(None, metavar="VOLUME", help="Names of the volumes to back up."),
    all_volumes: bool = typer.Option(False, "--all", help="Back up every volume of the daemon."),
    label: Optional[List[str]] = typer.Option(
        None, "--label", metavar="KEY=VALUE", help="Back up the volumes with this label (KEY alone: any value; repeat: all must match)."
    ),
    project: Optional[List[str]] = typer.Option(
        None, "--project", metavar="NAME", help="Back up the volumes of this Compose project (label com.docker.compose.project).",
        callback=nonempty,
    ),
    container: Optional[List[str]] = typer.Option(
        None, "--container", metavar="NAME", help="Back up every mount of this container: volumes, bind mounts, tmpfs (one archive each).",
        callback=nonempty,
    ),
    exclude: Optional[List[str]] = typer.Option(
        None,
        "--exclude",
        metavar="NAME|PATTERN",
        help="Without '/': a volume (glob) not to back up. With '/': a path pattern left out of every archive, "
        "from the volume root ('/cache', 'tmp/*') or at any depth ('**/*.log'). Repeatable.",
    ),
    to: Optional[List[str]] = typer.Option(
        None,
        "--to",
        metavar="BACKEND",
        help="Where to store: a [backends] name from the config, a directory (with a '/': ./dir), file:///path or "
        "s3://bucket/prefix. Repeat to write to several backends in one pass. "
        "[default: the config's [backends], else ~/.local/share/volsafe/backups]",
        callback=nonempty,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the backups made as a JSON array; no progress bar."),
    level: int = typer.Option(
        _LEVEL.default, "--level", metavar="N", min=_LEVEL.convert.minimum, max=_LEVEL.convert.maximum,  # type: ignore[attr-defined]  # a WholeNumber
        help="zstd compression level."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, metavar="N", help="zstd worker threads per volume [default: one per CPU]."),
    concurrency: int = typer.Option(
        _CONCURRENCY.default, "--concurrency", "-j", min=_CONCURRENCY.convert.minimum, max=_CONCURRENCY.convert.maximum,  # type: ignore[attr-defined]  # a WholeNumber
        metavar="N",
        help="Volumes backed up at once (1 with --quiesce-each and --stop, --pause or hooks).",
    ),
    stop: bool = typer.Option(
        False, "--stop",
        help="Stop the running containers that mount any of the volumes, once for the whole run (Compose order); "
        "they are restarted as soon as every volume is read.",
    ),
    pause: bool = typer.Option(False, "--pause", help="Pause those containers instead of stopping them."),
    quiesce_each: bool = typer.Option(
        False, "--quiesce-each", help="Stop or pause (and run hooks) around each volume's backup instead of once for the run."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Print what would be backed up, which containers would be stopped or paused, which hooks would run and "
        "where it would go; write nothing, touch no container.",
    ),
    lock_wait: float = typer.Option(
        DEFAULT_WAIT, "--lock-wait", min=0, metavar="SECONDS", help="How long to wait for another volsafe backing up or restoring the same volume."
    ),
    recipient: Optional[List[str]] = typer.Option(
        None, "--recipient", "-r", metavar="KEY", help="Encrypt (age format) for this age or SSH public key (repeatable). [default: [encryption] recipients]"
    ),
    recipients_file: Optional[List[str]] = typer.Option(
        None, "--recipients-file", "-R", metavar="FILE", help="Encrypt for the public keys in FILE, one per line (repeatable)."
    ),
    passphrase_file: Optional[str] = typer.Option(
        None, "--passphrase-file", metavar="FILE",
        help="Encrypt (age format, like age -p) with the passphrase on FILE's first line, instead of recipients. "
        "[default: $VOLSAFE_PASSPHRASE, [encryption] passphrase_file]",
    ),
) -> None:
    """Back up volumes to compressed .tar.zst archives with a JSON manifest beside each.

    Volumes are named, or selected with --all, --label, --project (minus --exclude NAME); --container
    backs up each of a container's mounts. Bind mounts are read through a read-only helper on the
    daemon's host; tmpfs mounts with the running container's own tar (a snapshot of memory-only
    data). They are stored as CONTAINER.DEST, e.g. web.var_lib_data.

    Each volume is mounted read-only into a short-lived helper container with no network, and its tar
    stream is compressed and written to every backend at once. A backup is listed only once its
    archive and manifest are both stored.

    With --stop or --pause, the running containers that mount any selected volume are stopped (or
    paused) once, in Compose dependency order, every volume is read, and they are brought back once
    (on every path, in reverse order); --quiesce-each does it around each volume instead. Containers
    opt in or out with the label volsafe.stop=true or volsafe.stop=false.
    """
    state = ctx.obj
    configured = state.backends  # a config file given or found is read first: a broken one stops here
    if stop and pause:
        raise UsageError("give --stop or --pause, not both")
    volume_excludes, path_excludes = split_excludes(exclude or ())
    selector = VolumeSelector(
        names=tuple(validate_volume_name(v) for v in volumes or ()),
        all=all_volumes,
        labels=dict(parse_label(text) for text in label or ()),
        projects=tuple(project or ()),
        exclude=volume_excludes,
    )
    if selector.empty and not container:
        raise UsageError("name volumes, or select them with --all, --label, --project or --container")
    backends = open_locations(to, configured)
    if not to and not as_json and not dry_run:
        where = ", ".join(b.url for b in backends)
        print(f"volsafe: backing up to {'the configured backends' if configured else 'the default location'} {where}", file=sys.stderr)
    recipients = recipients_for(state, recipient, recipients_file, passphrase_file)  # before any work: a bad key stops here
    options = BackupOptions(
        recipients=recipients,
        exclude=path_excludes,
        helper_image=state.helper_image, level=level, threads=threads, stop_containers=stop, pause_containers=pause, lock_wait=lock_wait,
        quiesce_each=quiesce_each,
    )
    picked = resolve_volumes(state.docker, selector)
    mounts = [m for name in container or () for m in container_mounts(state.docker, name)]
    picked, mounts = merge_mounts(picked, mounts, volume_excludes)
    if not picked and not mounts:
        raise UsageError("no volume matches the selection")
    if dry_run:
        plan = backup_plan(state.docker, picked, mounts, backends, options)
        print_json(plan) if as_json else print_backup_plan(plan)
        return
    if not as_json and (selector.needs_listing or mounts):
        print(f"volsafe: selected {', '.join(picked + [m.storage_name for m in mounts])}", file=sys.stderr)
    outcomes = run_backup(
        state.docker, picked, backends, options, reporter_for(quiet=as_json), mounts=mounts,
        concurrency=concurrency,
    )

    records = []
    for outcome in outcomes:
        for where, reason in outcome.failures.items():
            target = "" if where == "volume" else f" to {where}"
            print(f"volsafe: error: backup of {outcome.volume}{target} failed: {reason}", file=sys.stderr)
        if outcome.manifest is None:
            continue
        for backend in outcome.stored_on:
            m = outcome.manifest_on(backend)
            if m is None:
                continue
            records.append(backup_record(m, backend))
            if not as_json:
                print(
                    f"volsafe: backed up {m.volume} ({m.entries} entries, {human_size(m.tar_size or 0)} -> "
                    f"{human_size(m.stored_size)}) to {backend.url}",
                    file=sys.stderr,
                )
    if as_json:
        print_json(records)
    elif records:
        print_backups(records)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def print_backup_plan(plan: dict) -> None:
    """Print ``backup --dry-run``'s plan, one line per fact."""
    print("volsafe: dry run: nothing is written and no container is touched", file=sys.stderr)
    print(f"would back up: {', '.join(plan['volumes'])}")
    print(f"to: {', '.join(plan['to'])}")
    for session in plan["sessions"]:
        scope = f" for {', '.join(session['volumes'])}" if len(plan["sessions"]) > 1 else ""
        if session["quiesce"]:
            back = "unpause" if session["mode"] == "pause" else "start"
            print(f"would {session['mode']}{scope}, in this order: {', '.join(session['quiesce'])}; then {back} them in reverse order")
        else:
            print(f"would stop or pause no container{scope}")
        for hook in session["hooks"]:
            for phase in ("pre", "post"):
                if hook[phase]:
                    print(f"would run {phase}-hook in {hook['container']} ({hook['source']}): {hook[phase]}")
        if session["left_writing"]:
            print(f"left running with read-write mounts (crash-consistent only): {', '.join(session['left_writing'])}")


def register(app: typer.Typer) -> None:
    command(app, "backup")(backup)
