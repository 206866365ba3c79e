"""Backup into, and restore out of, a restic repository (``backup.restic.helper``'s containers).

Backup runs ``restic backup VOLUME`` in a read-only helper, with the persistent cache; restic takes
the last snapshot of the same host and path (the same volume) as the parent: a repeat backup reads
only what changed. Restore runs
``restic restore`` into the staging directory of ``backup.docker.staging`` and the caller commits
it with the same swap as every other restore.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator
import json
import logging
import os
import re
import subprocess
import tarfile
import tempfile
from datetime import datetime, timezone

from docker.types import Mount

from backup import __version__
from backup.archive.manifest import Manifest
from backup.archive.naming import VOLUME_NAME, BackupId, new_stamp, validate_volume_name
from backup.docker.helper import helper_session
from backup.docker.host import DockerHost, docker_errors
from backup.docker.locks import volume_lock
from backup.errors import IntegrityError, VolsafeError
from backup.progress import Reporter
from backup.restic.helper import VOLUMES, restic_command, restic_mounts
from backup.restic.repository import STREAM_TAG, TAG, ResticRepository, encode_meta

log = logging.getLogger(__name__)

# restic's exit code when it made a snapshot but could not read some files (restic help backup).
_INCOMPLETE = 3


def _json_lines(output: str) -> list[dict]:
    found = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _exec_or_unlock(repo: ResticRepository, helper, command: list[str]):
    """Run restic's ``command`` in ``helper`` with the password on its stdin; return the result.
    If that is cut short (Ctrl-C, SIGTERM, a lost daemon), the helper is stopped and the lock its
    restic leaves behind is removed, so that the next forget or prune is not blocked by it."""
    try:
        return helper.exec(command, stdin=[repo.password().encode() + b"\n"])
    except BaseException:
        with contextlib.suppress(Exception):
            with docker_errors(helper.host):
                helper.host.api.kill(helper.id)
        repo.remove_locks_of(helper.id[:12])  # Docker names a container's host after its id
        raise


def _sizes(summary: dict) -> tuple[int, int, int]:
    """Return (volume bytes, bytes added, entries) from restic's backup summary."""
    entries = int(summary.get("total_files_processed", 0)) + sum(
        int(summary.get(k, 0)) for k in ("dirs_new", "dirs_changed", "dirs_unmodified")
    )
    return int(summary.get("total_bytes_processed", 0)), int(summary.get("data_added", 0)), entries


def backup_volume(host: DockerHost, volume: str, repo: ResticRepository, options, progress: Reporter) -> Manifest:
    """Back up ``volume`` into ``repo``; return the manifest volsafe lists for the new snapshot.

    Raises VolsafeError (nothing listed then: a snapshot restic could not finish is not made, one
    that misses unreadable files is forgotten again).
    """
    validate_volume_name(volume)
    repo.password()  # before any work: a missing password stops here
    info = host.volume(volume)  # a volume that is not there stops here, before the cache volume is made
    created = datetime.now(timezone.utc).replace(microsecond=0)
    backup_id = BackupId(volume, new_stamp(created))
    meta: dict[str, Any] = {
        "labels": info.get("Labels") or {},
        "driver": info.get("Driver") or "local",
        "driver_opts": info.get("Options") or {},
        "docker_id": host.daemon_id,
        "version": __version__,
    }
    tags = [TAG, f"volume={volume}", f"volsafe-id={backup_id.stamp}", f"volsafe-meta={encode_meta(meta)}"]
    reason = options.restic_stream_reason or streamed_reason(host, repo)
    if reason is not None:
        return _backup_streamed(host, volume, repo, options, progress, reason, backup_id, created, meta, tags)
    mounts = restic_mounts(host, repo) + (Mount(f"{VOLUMES}/{volume}", volume, type="volume", read_only=True, no_copy=True),)
    args = ["backup", volume, "--json", "--host", host.host_name, "--tag", ",".join(tags), "--time", created.strftime("%Y-%m-%d %H:%M:%S")]
    for pattern in options.exclude:
        args += ["--exclude", f"{VOLUMES}/{volume}/{pattern.lstrip('/')}"]
    log.debug("restic backup of %s into %s in a helper, the volume read-only at %s/%s (not streamed: restic reads the files)",
              volume, repo.url, VOLUMES, volume)
    # The caller's QuiesceSession (backup.actions.backup) holds the volume's applications still around this.
    with volume_lock(host, volume, action="backup", wait=options.lock_wait), helper_session(
        host, options.helper_image, volume, role="restic-backup", writable=False, extra_mounts=mounts, reads_all=True
    ) as helper, progress.task(f"backup {volume}") as advance:
        result = _exec_or_unlock(repo, helper, ["sh", "-c", f'cd {VOLUMES} && exec "$@"', "sh", *restic_command(*args)])
        messages = _json_lines(result.output)
        summary = next((m for m in reversed(messages) if m.get("message_type") == "summary"), None)
        if result.exit_code == 0 and summary is not None:
            advance(_sizes(summary)[0])
    if result.exit_code == _INCOMPLETE and summary is not None:
        repo.forget([summary["snapshot_id"]])
        errors = [m for m in messages if m.get("message_type") == "error"]
        detail = errors[-1].get("error", {}).get("message", "") if errors else ""
        raise VolsafeError(f"{repo.url}: restic could not read every file of {volume!r}{': ' + detail if detail else ''}")
    if result.exit_code != 0 or summary is None:
        raise repo.error(result.output, what=f"backup of {volume}")
    # restic records no sizes in a snapshot: beside it in a local repository, else as tags.
    sizes = _sizes(summary)
    if not repo.record_sizes(backup_id, *sizes):
        try:
            repo.add_tags(summary["snapshot_id"], [f"volsafe-size={sizes[0]}", f"volsafe-added={sizes[1]}", f"volsafe-entries={sizes[2]}"])
        except VolsafeError as exc:  # the snapshot is stored; only list's sizes will be missing
            log.warning("%s: could not record the sizes of snapshot %s: %s", repo.url, summary["snapshot_id"][:8], exc)
    size, added, entries = sizes
    log.debug("restic: %s", {k: summary.get(k) for k in ("files_new", "files_changed", "files_unmodified", "data_added", "total_duration")})
    return Manifest(
        backup_id=backup_id, created=created, volume_labels=meta["labels"], volume_driver=meta["driver"],
        volume_driver_opts=meta["driver_opts"], source_hostname=host.host_name, source_docker_id=host.daemon_id,
        volsafe_version=__version__, tar_size=size, stored_size=added, sha256="", entries=entries,
        compression="restic", compression_level=0, excluded_paths=tuple(options.exclude),
        extra={"restic_snapshot": summary["snapshot_id"]},
    )


def streamed_reason(host: DockerHost, repo: ResticRepository) -> str | None:
    """Return why ``repo`` is used in streamed mode on ``host`` (restic on this host, reading a tar
    stream of the volume), or None where restic runs in the helper beside the volume's files."""
    if os.environ.get("VOLSAFE_RESTIC_MODE") == "stream":  # to compare the two modes (bench.restic)
        return "VOLSAFE_RESTIC_MODE=stream"
    if repo.local_path is None:
        return "the repository is not a local directory and the helper has no network"
    if host.remote:
        return f"the Docker daemon ({host.url}) is not on this host, so the repository cannot be mounted into its helper"
    return None


def _summary(output: str) -> tuple[list[dict], dict | None]:
    messages = _json_lines(output)
    return messages, next((m for m in reversed(messages) if m.get("message_type") == "summary"), None)


def _stop(process: subprocess.Popen) -> None:
    """Kill restic at once (never let it see the end of its input: it would store what it got)."""
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(Exception):
        process.wait(timeout=30)


def _backup_streamed(host, volume, repo: ResticRepository, options, progress: Reporter, reason: str, backup_id, created, meta, tags) -> Manifest:
    """Streamed mode: a helper without network writes the volume's tar stream (read-only, the same
    stream as a ``.tar.zst`` backup's, ``--exclude`` applied); restic on this host stores it as the
    snapshot's one file ``/VOLUME.tar`` (``restic backup --stdin``). restic's chunks deduplicate
    what did not change, but every backup reads the whole volume. The sizes and content digest are
    tagged on at the end: a snapshot without them never counts (``snapshot_manifest``)."""
    from backup.archive.tar.exclude import FilterStats, exclude_paths
    from backup.archive.tar.scanner import DIGEST_PREFIX, TarScanner
    from backup.docker.volume_tar import volume_tar

    log.debug(
        "restic backup of %s into %s in streamed mode (%s): restic on this host reads the volume's tar stream from a "
        "helper without network; unlike restic on the volume's files, every backup reads the whole volume "
        "(only changed chunks are stored)", volume, repo.url, reason,
    )
    args = [
        "backup", "--stdin", "--stdin-filename", f"{volume}.tar", "--json", "--host", host.host_name,
        "--tag", ",".join([*tags, STREAM_TAG]), "--time", created.strftime("%Y-%m-%d %H:%M:%S"),
    ]
    scanner = TarScanner()
    tar_size = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, volume_lock(
        host, volume, action="backup", wait=options.lock_wait
    ):
        process = repo.start(args, stdin=subprocess.PIPE, stdout=out, stderr=err)
        try:
            with volume_tar(host, options.helper_image, volume, role="backup") as chunks, progress.task(f"backup {volume}") as advance:
                tar = exclude_paths(chunks, options.exclude, FilterStats()) if options.exclude else chunks
                for chunk in tar:
                    scanner.feed(chunk)
                    tar_size += len(chunk)
                    process.stdin.write(chunk)  # type: ignore[union-attr]
                    advance(len(chunk), scanner.entries)
                scanner.finish()  # a stream cut short raises here, before restic sees its end
            process.stdin.close()  # type: ignore[union-attr]
            code = process.wait()
        except BrokenPipeError:  # restic stopped reading: its own message says why
            _stop(process)
            code = process.returncode if process.returncode is not None else 1
            code = code or 1
        except BaseException:
            # Its lock stays: this host, a process that is gone, so stale by restic's rule, and removed
            # by the next forget/prune/tag (not here: with the network gone, restic would retry for minutes).
            _stop(process)
            raise
        out.seek(0)
        err.seek(0)
        output, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    messages, summary = _summary(output)
    if code != 0 or summary is None or not summary.get("snapshot_id"):
        raise repo.error(errors + "\n" + output, what=f"backup of {volume}")
    snapshot = summary["snapshot_id"]
    added = int(summary.get("data_added", 0))
    digest = scanner.content_digest.removeprefix(DIGEST_PREFIX)
    try:
        repo.add_tags(snapshot, [f"volsafe-size={tar_size}", f"volsafe-added={added}", f"volsafe-entries={scanner.entries}", f"volsafe-digest={digest}"])
    except VolsafeError as exc:
        with contextlib.suppress(VolsafeError):
            repo.forget([snapshot])
        raise VolsafeError(f"{repo.url}: the snapshot of {volume} was stored but could not be completed, so it does not count: {exc}") from None
    log.debug("restic (streamed): %s", {k: summary.get(k) for k in ("data_added", "total_bytes_processed", "total_duration")})
    return Manifest(
        backup_id=backup_id, created=created, volume_labels=meta["labels"], volume_driver=meta["driver"],
        volume_driver_opts=meta["driver_opts"], source_hostname=host.host_name, source_docker_id=host.daemon_id,
        volsafe_version=__version__, tar_size=tar_size, stored_size=added, sha256="", entries=scanner.entries,
        content_digest=scanner.content_digest, compression="restic", compression_level=0, excluded_paths=tuple(options.exclude),
        extra={"restic_snapshot": snapshot, "restic_mode": "stream"},
    )


def dump_tar(repo: ResticRepository, manifest: Manifest, metadata_sink, advance) -> Iterator[bytes]:
    """Yield the tar stream of a streamed snapshot (``restic dump SNAPSHOT /VOLUME.tar`` on this host),
    re-emitted and checked as a ``.tar.zst`` archive is: hostile entries refused, and the last chunk
    held back until the size, entry count and content digest the snapshot records have matched.
    Raises IntegrityError or the restic error."""
    from backup.archive.tar.scanner import TarScanner

    snapshot = manifest.extra.get("restic_snapshot", "")
    top = manifest.extra.get("restic_path") or f"{manifest.volume}.tar"
    if not re.fullmatch(r"[0-9a-f]{8,64}", snapshot) or not VOLUME_NAME.fullmatch(top):
        raise IntegrityError(f"{manifest.backup_id}: refusing snapshot {snapshot[:16]!r} with file {top!r}")
    scanner = TarScanner(metadata_sink, canonical=True)
    with tempfile.TemporaryFile() as err:
        process = repo.start(["dump", snapshot, f"/{top}"], stdout=subprocess.PIPE, stderr=err)
        try:
            size, held = 0, b""
            while True:
                chunk = process.stdout.read(1 << 20)  # type: ignore[union-attr]
                if not chunk:
                    break
                size += len(chunk)
                if manifest.tar_size and size > manifest.tar_size:
                    raise IntegrityError(f"{manifest.backup_id}: the snapshot holds more than the {manifest.tar_size} bytes of tar it records")
                out = scanner.feed(chunk) or b""
                advance(len(chunk))
                if held:
                    yield held
                held = out
            if process.wait() != 0:
                err.seek(0)
                raise repo.error(err.read().decode(errors="replace"), what=f"restore of {manifest.backup_id}")
            end = scanner.finish()
            if manifest.tar_size and size != manifest.tar_size:
                raise IntegrityError(f"{manifest.backup_id}: the snapshot holds {size} bytes of tar, not the {manifest.tar_size} it records")
            if manifest.entries and scanner.entries != manifest.entries:
                raise IntegrityError(f"{manifest.backup_id}: {scanner.entries} entries, not the {manifest.entries} recorded")
            if manifest.content_digest and scanner.content_digest != manifest.content_digest:
                raise IntegrityError(f"{manifest.backup_id}: the content digest does not match the one recorded at backup")
            yield held + end
        finally:
            _stop(process)


# Restore the snapshot's /VOLUME ($3) into the staging directory $1: restic writes STAGING/VOLUME, whose
# entries move up into STAGING (through a name no entry of the volume can have); the root's own
# mode, owner and mtime are printed for the commit to apply to the volume root.
EXTRACT_SCRIPT = """
set -eu
s="/volsafe/target/$1"; tmp="$s/.volsafe-restic-$2"; top="$3"; shift 3
mkdir "$s"
"$@" --target "$s" >/dev/null
mv "$s/$top" "$tmp"
echo "VOLSAFE-ROOT $(stat -c '%f %u %g %Y' "$tmp")"
find "$tmp" -mindepth 1 -maxdepth 1 -exec mv {} "$s/" \\;
rmdir "$tmp"
"""


def extract_into_staging(target, repo: ResticRepository, manifest: Manifest, raw_headers, progress: Reporter) -> None:
    """Restore ``manifest``'s snapshot into ``target``'s staging directory (``target`` a StagedTarget
    whose helper has ``restic_mounts``); put the root's metadata into ``raw_headers`` for the
    commit. Raises VolsafeError."""
    snapshot = manifest.extra.get("restic_snapshot", "")
    if not snapshot:
        raise VolsafeError(f"{manifest.backup_id}: no restic snapshot recorded")
    top = manifest.extra.get("restic_path") or manifest.volume  # the snapshot's one top-level directory
    if not VOLUME_NAME.fullmatch(top) or not re.fullmatch(r"[0-9a-f]{8,64}", snapshot):
        # Both come from the repository, which others may write: the script moves "$s/$top".
        raise IntegrityError(f"{manifest.backup_id}: refusing snapshot {snapshot[:16]!r} with top directory {top!r}")
    command = ["sh", "-c", EXTRACT_SCRIPT, "sh", target.staging, target.token, top, *restic_command("restore", snapshot)]
    with progress.task(f"restore {target.volume}", total=manifest.tar_size or None) as advance:
        result = _exec_or_unlock(repo, target.helper, command)
        if result.exit_code != 0:
            raise repo.error(result.output, what=f"restore of {manifest.backup_id}")
        advance(manifest.tar_size or 0)
    root = next((line.split()[1:] for line in result.output.splitlines() if line.startswith("VOLSAFE-ROOT ")), None)
    if root is None or len(root) != 4:
        raise VolsafeError(f"restore of {manifest.backup_id}: restic restored no /{top}")
    mode, uid, gid, mtime = int(root[0], 16), int(root[1]), int(root[2]), int(root[3])
    info = tarfile.TarInfo(".")
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode & 0o7777, uid, gid, mtime
    raw_headers.write(info.tobuf(tarfile.PAX_FORMAT))


def verify_repository(repo: ResticRepository, refs, progress: Reporter, restore_with=None) -> list:
    """Return a verdict (``backup.actions.verify.Verified``) for each snapshot ``refs`` name, or
    for every volsafe snapshot: ``restic check`` of the repository, the snapshot's presence, and
    with ``restore_with`` a restore test. Raises NotFoundError for a REF that names nothing."""
    from backup.actions.verify import Verified

    manifests = repo.manifests() if refs is None else repo.resolve_all(list(refs))  # one restic snapshots either way
    if not manifests:
        return []
    with progress.task(f"restic check {repo.url}") as advance:
        try:
            repo.check()
            problem = None
        except VolsafeError as exc:
            problem = str(exc)
        advance(0)
    verdicts = []
    for manifest in manifests:
        verdict = Verified(manifest.backup_id, repo, manifest=manifest)
        if problem is not None:
            verdict.error = problem
        else:
            verdict.checks = ["restic check", f"snapshot {manifest.extra.get('restic_snapshot', '')[:8]}"]
            if manifest.extra.get("restic_mode") == "stream" and restore_with is None:
                try:  # its tar read back: size, entries and volsafe's content digest
                    for _ in dump_tar(repo, manifest, None, lambda n: None):
                        pass
                    verdict.checks.append("content digest")
                except VolsafeError as exc:
                    verdict.error = str(exc) or type(exc).__name__
            if restore_with is not None:
                try:
                    restore_with(manifest)
                    verdict.checks.append("restore test")
                except VolsafeError as exc:
                    verdict.error = str(exc) or type(exc).__name__
        verdicts.append(verdict)
    return verdicts


def prune_repository(repo: ResticRepository, policy, *, volumes, now, tz, dry_run: bool, hosts=None) -> list:
    """Apply ``policy`` to each (host, volume)'s volsafe snapshots in ``repo`` (only ``hosts``' when
    given, as for a store): ``restic forget`` of those it drops, then one ``restic prune``. Returns a
    ``backup.actions.prune.Pruned`` each."""
    from backup.actions.prune import Pruned
    from backup.jobs.retention import decide

    # One listing serves the retention decisions and the unfinished snapshots: each restic command
    # derives the repository key again (about 0.5 s). Each volume's are picked from it by their
    # parsed tags (manifests_in, unfinished), never by restic's tag filter.
    snapshots = repo.listing(volumes)
    groups: dict[tuple[str, str], list[Manifest]] = {}
    for manifest in repo.manifests_in(snapshots, volumes or None):
        if hosts is not None and manifest.source_hostname not in hosts:
            continue
        groups.setdefault((manifest.volume, manifest.source_hostname), []).append(manifest)
    kept: list[tuple[Manifest, Any]] = []
    dropped: list[tuple[Manifest, Any]] = []
    for key in sorted(groups):
        manifests = {str(m.backup_id): m for m in groups[key]}
        for decision in decide(manifests.values(), policy, now, tz):
            (kept if decision.keep or dry_run else dropped).append((manifests[decision.id], decision))
    results = [Pruned(m, repo, d) for m, d in kept]
    unfinished = [] if dry_run else repo.unfinished(snapshots, volumes, hosts, now)
    if unfinished:
        log.warning("%s: forgetting %d streamed snapshot(s) never finished (older than a day)", repo.url, len(unfinished))
    if dropped or unfinished:
        try:
            repo.forget([m.extra["restic_snapshot"] for m, _ in dropped] + unfinished)
            repo.forget_sizes(m.backup_id for m, _ in dropped)
        except VolsafeError as exc:
            log.warning("could not forget snapshots in %s: %s", repo.url, exc)
            return results + [Pruned(m, repo, d, error=str(exc)) for m, d in dropped]
        try:  # the snapshots are gone from the listing already; prune only frees their data
            repo.prune()
        except VolsafeError as exc:
            log.warning("forgot %d snapshot(s) in %s, but could not prune their data: %s", len(dropped) + len(unfinished), repo.url, exc)
    return results + [Pruned(m, repo, d, removed=True) for m, d in dropped]
