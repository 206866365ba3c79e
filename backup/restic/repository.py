"""A restic repository as a volsafe target: ``restic:REPOSITORY`` or ``type = "restic"``.

A repository is not a store of opaque objects (``storage_backends.base.Backend``): restic itself
chunks, deduplicates, encrypts and keeps the snapshots. So a ``ResticRepository`` stands beside the
backends; the actions ask ``backup.restic.is_repository`` and hand such targets to ``backup.restic``.

volsafe runs Debian's ``restic`` binary. Commands that touch no volume (snapshots, tag, forget,
prune, check, init, unlock) run on this host; backup and restore run restic inside a helper
container (``backup.restic.helper``). The password comes from the table's ``password_file`` or
``password_command``, else restic's own RESTIC_PASSWORD, RESTIC_PASSWORD_FILE or
RESTIC_PASSWORD_COMMAND; volsafe reads it into memory and hands it to each restic process on its
standard input. It is never put on a command line, in an environment, a log or an error message.

A snapshot volsafe made carries tags: ``volsafe``, ``volume=NAME``, ``volsafe-id=STAMP`` (the
``VOLUME@STAMP`` id volsafe lists), ``volsafe-meta=…`` (base64url JSON: labels, driver and its
options, the daemon's id, volsafe's version). Its sizes (the volume's bytes, the bytes the snapshot
added, its entries) are only known once restic has stored it: in a local repository they go to a
file beside the snapshots, ``volsafe-sizes/VOLUME@STAMP`` (``record_sizes``); otherwise (and where
that file cannot be written) they are tagged on: ``volsafe-size=N``, ``volsafe-added=N``,
``volsafe-entries=N``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from backup.archive.manifest import Manifest
from backup.archive.tar.scanner import DIGEST_PREFIX
from backup.archive.naming import STAMP, VOLUME_NAME, BackupId, Ref
from backup.errors import NotFoundError, UsageError, VolsafeError
from storage_backends.base import Backend, BackendError, ObjectInfo, PermanentError
from storage_backends.local import LocalBackend

log = logging.getLogger(__name__)

PREFIX = "restic:"
# restic's backends that are not a local path (``restic help``, "Repository" section).
_REMOTE = re.compile(r"^(s3|sftp|rest|b2|azure|gs|swift|rclone):", re.IGNORECASE)
# restic's words (local, S3, SFTP, REST) for "there is no config file": the repository is missing.
_MISSING = re.compile(r"no such file or directory|does not exist|NoSuchKey|NoSuchBucket|not found|\b404\b", re.IGNORECASE)
_PASSWORD_SOURCES = ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")
INSTALL_HINT = "install Debian's restic package (apt-get install restic) or put a restic binary on PATH"
TAG = "volsafe"
STREAM_TAG = "volsafe-stream"  # a snapshot of one file, VOLUME.tar: the volume's tar stream (streamed mode)
PASSWORD_NOTICE = "reading repository password from stdin\n"  # restic prints it on stdout


class ResticError(VolsafeError):
    """restic failed; the message is one line naming the repository and the cause."""


class RepositoryLocked(ResticError):
    """Another restic holds a lock on the repository (or a killed one left it)."""


class RepositoryMissing(NotFoundError):
    """There is no restic repository at the location."""


def restic_binary() -> str:
    """Return the path of the restic binary ($VOLSAFE_RESTIC or ``restic`` on PATH). Raises VolsafeError."""
    wanted = os.environ.get("VOLSAFE_RESTIC") or "restic"
    found = shutil.which(wanted)
    if found is None:
        raise VolsafeError(f"restic targets need the restic program, which was not found ({wanted!r}): {INSTALL_HINT}")
    return os.path.realpath(found)


@dataclass(repr=False)
class ResticRepository(Backend):
    """One restic repository and how to open it (password source, environment for its store).

    A target like any backend (``--to``, ``--from``, ``[backends]``), but it holds snapshots, not
    byte objects: the object methods refuse, and the actions branch on ``backup.restic.is_repository``
    to back up, list, restore, verify and prune through restic instead.
    """

    repository: str
    password_file: str | None = None
    password_command: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    _password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.repository.strip():
            raise UsageError("restic: needs a repository, e.g. restic:/srv/restic or restic:s3:http://host:9000/bucket")
        if self.local_path is not None and not self.repository.startswith("local:"):
            self.repository = os.path.abspath(self.repository)

    @property
    def url(self) -> str:  # type: ignore[override]  # Backend declares url as an attribute; here it is derived
        """How the repository is shown: ``restic:REPOSITORY``, a password in a URL masked."""
        return PREFIX + re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", self.repository)

    @property
    def local_path(self) -> str | None:
        """Return the directory of a local repository, or None for a remote one (s3:, sftp:, rest:…)."""
        if _REMOTE.match(self.repository):
            return None
        return self.repository[len("local:"):] if self.repository.startswith("local:") else self.repository

    def close(self) -> None:
        """Nothing to release (kept for the Backend-like interface)."""

    def __repr__(self) -> str:
        return f"<ResticRepository {self.url}>"

    # -- the password: read once, kept in memory only --

    def password(self) -> str:
        """Return the repository password. Raises UsageError if no source gives one."""
        if self._password is None:
            self._password = self._read_password()
        return self._password

    def _read_password(self) -> str:
        if self.password_file:
            return _first_line_of(self.password_file, f"{self.url}: password_file")
        if self.password_command:
            return _command_output(self.password_command, f"{self.url}: password_command")
        if os.environ.get("RESTIC_PASSWORD"):
            return os.environ["RESTIC_PASSWORD"]
        if os.environ.get("RESTIC_PASSWORD_FILE"):
            return _first_line_of(os.environ["RESTIC_PASSWORD_FILE"], "RESTIC_PASSWORD_FILE")
        if os.environ.get("RESTIC_PASSWORD_COMMAND"):
            return _command_output(os.environ["RESTIC_PASSWORD_COMMAND"], "RESTIC_PASSWORD_COMMAND")
        raise UsageError(
            f"{self.url}: no repository password: set RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND "
            f"(or RESTIC_PASSWORD), or password_file / password_command in its [backends] table"
        )

    # -- running restic on this host --

    def environment(self) -> dict[str, str]:
        """Return the environment for restic: ours without restic's password and repository
        variables (the password goes on stdin, the repository with -r), plus the table's ``env``."""
        env = {k: v for k, v in os.environ.items() if k not in _PASSWORD_SOURCES and not k.startswith("RESTIC_REPOSITORY")}
        env.update(self.env)
        return env

    def run(self, args: list[str], *, what: str) -> str:
        """Run ``restic -r REPO ARGS`` here; return its stdout. Raises ResticError (one line)."""
        command = [restic_binary(), "-r", self.repository, *args]
        log.debug("running restic %s on %s", " ".join(shlex.quote(a) for a in args), self.url)
        try:
            done = subprocess.run(
                command, input=self.password() + "\n", capture_output=True, text=True, env=self.environment(), check=False
            )
        except OSError as exc:
            raise VolsafeError(f"cannot run restic ({exc}): {INSTALL_HINT}") from None
        if done.returncode != 0:
            raise self.error(done.stderr or done.stdout, what=what)
        return done.stdout.replace(PASSWORD_NOTICE, "", 1)

    def start(self, args: list[str], *, stdin=None, stdout=None, stderr=None) -> subprocess.Popen:
        """Start ``restic -r REPO ARGS`` here with the password on a pipe's descriptor (restic's
        standard input may carry data, ``backup --stdin``), never on a command line or in an
        environment. restic is killed if this process dies (``PR_SET_PDEATHSIG``): a restic
        reading a tar from us must never see a volsafe killed with ``kill -9`` as the end of the
        volume and store half of it. Raises VolsafeError if restic cannot be run."""
        binary = restic_binary()
        log.debug("running restic %s on %s (streamed)", " ".join(shlex.quote(a) for a in args), self.url)
        password = self.password().encode() + b"\n"
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, password)  # far below a pipe's buffer
            os.close(write_end)
            write_end = -1
            command = [binary, "-r", self.repository, "--password-file", f"/dev/fd/{read_end}", *args]
            try:
                return subprocess.Popen(
                    command, stdin=stdin, stdout=stdout, stderr=stderr, env=self.environment(),
                    pass_fds=(read_end,), preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                )
            except OSError as exc:
                raise VolsafeError(f"cannot run restic ({exc}): {INSTALL_HINT}") from None
        finally:
            if write_end >= 0:
                os.close(write_end)
            os.close(read_end)

    def error(self, output: str, *, what: str) -> VolsafeError:
        """Return the error for restic's failing ``output``: one line, with what to do where we know."""
        text = output or ""
        if "wrong password" in text:
            return ResticError(f"{self.url}: {what} failed: wrong password (no key in the repository opens with it)")
        if ("Is there a repository at the following location?" in text or "unable to open config file" in text) and not _MISSING.search(text):
            # Not "no config there" but no answer at all (connection refused, an unknown host, ssh
            # failing): saying "create one" would send the user the wrong way.
            lines = [line.strip() for line in text.splitlines() if line.strip().startswith("Fatal:")] or ["restic failed"]
            reason = lines[-1].removeprefix("Fatal: ").removeprefix("unable to open config file: ")
            return ResticError(f"{self.url}: {what} failed: cannot reach the repository: {reason}")
        if "Is there a repository at the following location?" in text or "unable to open config file" in text:
            return RepositoryMissing(
                f"{self.url}: {what} failed: there is no restic repository there; create one with "
                f"'volsafe repo init {self.url}' (or 'restic init')"
            )
        if "repository is already locked" in text:
            return RepositoryLocked(
                f"{self.url}: {what} failed: the repository is locked by another restic; if none is running "
                f"(a killed run left its lock), remove it with 'volsafe repo unlock --all {self.url}'"
            )
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("{")]
        fatal = [line for line in lines if line.startswith("Fatal:")]
        reason = (fatal or lines or ["restic failed"])[-1]
        return ResticError(f"{self.url}: {what} failed: {reason.removeprefix('Fatal: ')}")

    # -- what volsafe asks of a repository --

    def init(self) -> None:
        """Create the repository. Raises ResticError (e.g. one is there already)."""
        self.run(["init"], what="init")

    def unlock(self, *, remove_all: bool = False) -> None:
        """Remove stale locks (restic's rule: a lock whose process on this host is gone, or older
        than 30 minutes); with ``remove_all``, every lock."""
        self.run(["unlock", *(["--remove-all"] if remove_all else [])], what="unlock")

    def remove_locks_of(self, hostname: str) -> None:
        """Remove the locks a restic on ``hostname`` (a helper container volsafe killed) left in a
        local repository; never raises. restic itself calls them stale only after 30 minutes, since
        it cannot see that a process in another container is gone."""
        path = self.local_path
        if path is None:
            return
        try:
            for lock_id in self.run(["--no-lock", "list", "locks"], what="listing locks").split():
                lock = json.loads(self.run(["--no-lock", "cat", "lock", lock_id], what="reading a lock") or "{}")
                if lock.get("hostname") == hostname:
                    os.remove(os.path.join(path, "locks", lock_id))
                    log.info("removed the lock restic left in %s when its helper was stopped", self.url)
        except (VolsafeError, OSError, ValueError) as exc:
            log.warning("%s: could not remove the lock of a stopped restic (%s); 'volsafe repo unlock --all %s' does", self.url, exc, self.url)

    def check(self, *, read_data: bool = False) -> None:
        """Run ``restic check``. Raises ResticError if the repository has errors."""
        self.run(["check", *(["--read-data"] if read_data else [])], what="check")

    def snapshots(self, volume: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        """Return volsafe's snapshots (of ``volume``, on ``host``), oldest first, as restic reports them."""
        args = ["snapshots", "--json", "--tag", TAG if volume is None else f"{TAG},volume={volume}"]
        if host is not None:
            args += ["--host", host]
        found = json.loads(self.run(args, what="listing snapshots") or "[]") or []
        return sorted(found, key=lambda s: s.get("time", ""))

    # A streamed snapshot is tagged with its sizes only once restic has stored all of it; one
    # without them this much later was never finished (tagging failed, or the run was cut off) and
    # would otherwise keep a whole copy of the volume's data forever, unseen by list and retention.
    UNFINISHED_AFTER = 86400.0

    def listing(self, volumes: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Return the one ``restic snapshots`` listing that serves ``volumes`` (every volume when
        None): restic's tag filter for a single volume, else all of volsafe's snapshots. Callers
        pick each volume's from it (``manifests_in``, ``unfinished``), never trusting the filter:
        every restic command derives the repository key again (about 0.5 s), so a command lists once."""
        wanted = set(volumes) if volumes else set()
        return self.snapshots(next(iter(wanted)) if len(wanted) == 1 else None)

    def unfinished(self, snapshots: list[dict[str, Any]], volumes: list[str] | None, hosts: set[str] | None, now: datetime) -> list[str]:
        """Return the ids of the streamed snapshots in ``snapshots`` (a ``listing``; of ``volumes``,
        from ``hosts``) that were never finished and are older than UNFINISHED_AFTER seconds at
        ``now``: ``prune`` forgets them."""
        ids = []
        for snapshot in snapshots:
            tags = _tags(snapshot)
            if STREAM_TAG not in tags or "volsafe-size" in tags:
                continue
            if volumes and tags.get("volume") not in volumes:
                continue  # the volume its manifest would name, not whatever restic's tag filter matched
            if hosts is not None and snapshot.get("hostname") not in hosts:
                continue
            made = _parse_time(str(snapshot.get("time", "")))
            if made == datetime.fromtimestamp(0, timezone.utc):
                continue  # no time that parses: never taken for old
            if (now - made).total_seconds() > self.UNFINISHED_AFTER and re.fullmatch(r"[0-9a-f]{8,64}", str(snapshot.get("id", ""))):
                ids.append(str(snapshot["id"]))
        return ids

    # -- sizes of local repositories' snapshots, recorded beside them --

    SIZES_DIR = "volsafe-sizes"

    def _sizes_store(self) -> LocalBackend | None:
        """The repository's directory as a store of the sizes files: whoever can write the
        repository must not make volsafe follow a link or open a FIFO there (LocalBackend opens
        every name below its root with O_NOFOLLOW and refuses special files)."""
        return None if self.local_path is None else LocalBackend(self.local_path)

    def record_sizes(self, backup_id: BackupId, size: int, added: int, entries: int) -> bool:
        """Record a new snapshot's sizes in a local repository, as ``volsafe-sizes/VOLUME@STAMP``
        (one small JSON file, written atomically); return False where the repository is not
        local or the file cannot be written (the caller tags them on instead).

        Why not ``restic tag``: every restic command derives the repository key again (restic
        calibrates its scrypt to about 0.5 s) and ``tag`` takes the exclusive lock, so tagging cost
        0.55-0.7 s per backup here (a repeat backup of a 1 GB volume: 4.2 s, restic itself 2.6 s)
        and made concurrent backups into one repository wait for each other. restic ignores other
        directories in a repository (``restic check`` passes); whoever can write the repository can
        change these files, as they can its tags: they only change the sizes ``list`` shows."""
        store = self._sizes_store()
        if store is None:
            return False
        record = json.dumps({"size": size, "added": added, "entries": entries}).encode() + b"\n"
        try:
            store.save(f"{self.SIZES_DIR}/{backup_id}", [record])
        except (OSError, BackendError) as exc:
            log.debug("%s: cannot record sizes in %s (%s); tagging the snapshot instead", self.url, self.SIZES_DIR, exc)
            return False
        return True

    def recorded_sizes(self, volumes: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """Return the sizes ``record_sizes`` wrote, by ``VOLUME@STAMP`` (nothing for a remote
        repository): of ``volumes`` only when given. A volume's files are those named
        ``VOLUME@…``: a volume name cannot hold '@' (``VOLUME_NAME``, Docker's rule), so that
        prefix names no other volume's, and a fleet's shared repository is not read whole for one."""
        store = self._sizes_store()
        if store is None:
            return {}
        prefixes = [f"{self.SIZES_DIR}/"] if volumes is None else [
            f"{self.SIZES_DIR}/{volume}@" for volume in sorted(set(volumes)) if VOLUME_NAME.fullmatch(volume)
        ]
        found = {}
        try:
            for info in (info for prefix in prefixes for info in store.list(prefix)):
                name = info.key[len(self.SIZES_DIR) + 1:]
                if "/" in name or info.size > 4096:
                    continue
                try:
                    with store.open(info.key) as file:
                        data = json.loads(file.read(4096))
                except (OSError, BackendError, ValueError, RecursionError):
                    continue
                if isinstance(data, dict):
                    found[name] = {k: _int(str(data.get(k, ""))) for k in ("size", "added", "entries")}
        except (OSError, BackendError) as exc:
            log.debug("%s: cannot read %s: %s", self.url, self.SIZES_DIR, exc)
        return found

    def forget_sizes(self, backup_ids: Iterable[BackupId]) -> None:
        """Remove the recorded sizes of snapshots that were forgotten."""
        store = self._sizes_store()
        if store is None:
            return
        for backup_id in backup_ids:
            with contextlib.suppress(OSError, BackendError):
                store.remove(f"{self.SIZES_DIR}/{backup_id}")

    def manifests(self, volume: str | None = None) -> list[Manifest]:
        """Return the manifest of each volsafe snapshot (of ``volume``), oldest first."""
        volumes = None if volume is None else [volume]
        return self.manifests_in(self.listing(volumes), volumes)

    def manifests_in(self, snapshots: list[dict[str, Any]], volumes: Iterable[str] | None = None) -> list[Manifest]:
        """Return the manifest of each volsafe snapshot of a listing (of ``volumes`` only), oldest first.

        Whoever can write the repository can write snapshots and tags: one that does not parse is
        skipped with a warning naming it (the others stay usable), and restic's tag filter is not
        trusted to mean the volume (a snapshot may carry two ``volume=`` tags): the volume is the
        one its parsed manifest names."""
        wanted = None if volumes is None else set(volumes)
        recorded = self.recorded_sizes(wanted) if snapshots else {}
        found = []
        for snapshot in snapshots:
            try:
                if wanted is not None and _tags(snapshot).get("volume") not in wanted:
                    continue  # another volume's (the volume= tag snapshot_manifest reads; checked again below)
                manifest = snapshot_manifest(snapshot, recorded)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                log.warning("%s: skipping snapshot %s: %s", self.url, str(snapshot.get("id", "?"))[:8], exc)
                continue
            if manifest is not None and (wanted is None or manifest.volume in wanted):
                found.append(manifest)
        return sorted(found, key=lambda m: (m.created, str(m.backup_id)))

    def newest_by_volume(self) -> dict[str, BackupId]:
        """Return each volume's newest volsafe snapshot id (``volsafe volumes``)."""
        return {m.volume: m.backup_id for m in self.manifests()}  # oldest first: the newest wins

    def resolve(self, ref: Ref) -> Manifest:
        """Return the manifest ``ref`` names (the newest of its volume without a stamp). Raises NotFoundError."""
        return self.resolve_all([ref])[0]

    def resolve_all(self, refs: list[Ref]) -> list[Manifest]:
        """Return the manifest each of ``refs`` names, in order, from one listing (``resolve``).
        Raises NotFoundError for the first that names nothing."""
        if not refs:
            return []
        snapshots = self.listing(ref.volume for ref in refs)
        by_volume: dict[str, list[Manifest]] = {}
        for manifest in self.manifests_in(snapshots, [ref.volume for ref in refs]):
            by_volume.setdefault(manifest.volume, []).append(manifest)  # oldest first
        resolved = []
        for ref in refs:
            found = by_volume.get(ref.volume, [])
            if ref.backup_id is not None:
                found = [m for m in found if m.backup_id == ref.backup_id]
                if not found:
                    raise NotFoundError(f"no backup {ref.backup_id} in {self.url}")
            if not found:
                raise NotFoundError(f"no backups of volume {ref.volume!r} in {self.url}")
            resolved.append(found[-1])
        return resolved

    def add_tags(self, snapshot: str, tags: Iterable[str]) -> str:
        """Add ``tags`` to a snapshot; return the snapshot's new id (restic rewrites it)."""
        self._exclusive(["tag", "--add", ",".join(tags), snapshot], what="tagging the snapshot", wait=self.TAG_WAIT)  # restic tag locks exclusively
        return snapshot

    def forget(self, snapshots: list[str]) -> None:
        """Forget the snapshots (their data stays until ``prune``)."""
        if snapshots:
            self._exclusive(["forget", *snapshots], what="forgetting snapshots")

    def prune(self) -> None:
        """Remove the data no snapshot uses any more."""
        self._exclusive(["prune"], what="prune")

    # How long tagging a new snapshot waits for other runs' locks (restic 0.14 does not wait
    # itself, and ``restic tag`` needs the exclusive lock): long enough for another volume's backup
    # into the same repository (``--concurrency``, another host, another job) to end, short enough
    # that a forgotten lock shows as an error within a scheduled run.
    TAG_WAIT = 900.0

    def _exclusive(self, args: list[str], *, what: str, wait: float = 0.0) -> str:
        """Run a command that needs the repository's exclusive lock. Where a lock blocks it, remove
        the stale ones as ``restic unlock`` does (a lock of a process on this host that is gone, or
        older than 30 minutes; never a live one) and try again; with ``wait``, keep trying with
        growing pauses (1 s up to 15 s) for that many seconds while live locks remain; then
        RepositoryLocked (which names ``volsafe repo unlock --all``)."""
        deadline = time.monotonic() + wait
        pause = 1.0
        try:
            return self.run(args, what=what)
        except RepositoryLocked:
            self.unlock()
            log.info("%s: removed stale locks (restic unlock) and tried again", self.url)
        while True:
            try:
                return self.run(args, what=what)
            except RepositoryLocked:
                if time.monotonic() + pause > deadline:
                    raise
                log.info("%s: %s waits for another run's lock on the repository", self.url, what)
                time.sleep(pause)
                pause = min(pause * 2, 15.0)

    # The Backend object interface: a repository holds snapshots, not byte objects, so it refuses.
    def _refused(self) -> PermanentError:
        return PermanentError(f"{self.url}: a restic repository holds snapshots, not objects")

    def save(self, key: str, chunks: Iterable[bytes]) -> int:
        raise self._refused()

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        raise self._refused()

    def stat(self, key: str) -> ObjectInfo:
        raise self._refused()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        raise self._refused()

    def remove(self, key: str) -> None:
        raise self._refused()


def _die_with_parent(parent: int) -> None:
    """In a child before exec: get SIGKILL when the parent (thread) dies (Linux ``PR_SET_PDEATHSIG``).
    If the parent died between the fork and this call, the signal would never come: exit at once.
    (Only a system call and os functions here: nothing that takes a lock another thread may hold.)"""
    try:
        _LIBC.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


try:
    import ctypes

    _LIBC: Any = ctypes.CDLL(None, use_errno=True)  # loaded here: a child between fork and exec must not import
except OSError:
    _LIBC = None


def _first_line_of(path: str, what: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    line = text.splitlines()[0] if text.splitlines() else ""
    if not line:
        raise UsageError(f"{what}: {path} is empty")
    return line


def _command_output(command: str, what: str) -> str:
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, check=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{what}: cannot run it: {exc}") from None
    if done.returncode != 0:
        raise UsageError(f"{what} exited {done.returncode}")
    password = done.stdout.rstrip("\r\n")
    if not password:
        raise UsageError(f"{what} printed no password")
    return password


# ---------------------------------------------------------------------------------------------
# volsafe's manifest data, kept in the snapshot's tags


def encode_meta(data: dict[str, Any]) -> str:
    """Return ``data`` as a tag value: compact JSON, base64url, no padding (no ',' for restic's taglists)."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_meta(text: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _tags(snapshot: dict[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag in snapshot.get("tags") or []:
        name, _, value = tag.partition("=")
        tags.setdefault(name, value)
    return tags


def _int(text: str | None) -> int:
    return int(text) if text and len(text) <= 20 and text.isascii() and text.isdigit() else 0


def _str_map(value: Any) -> dict[str, str]:
    """A labels or options map from a snapshot's tags: a dict of strings, else nothing."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {}
    return dict(value)


def snapshot_manifest(snapshot: dict[str, Any], recorded: dict[str, dict[str, int]] | None = None) -> Manifest | None:
    """Return the manifest of a snapshot volsafe made, or None for another snapshot. Sizes come
    from its tags, else from ``recorded`` (``ResticRepository.recorded_sizes``)."""
    tags = _tags(snapshot)
    volume, stamp = tags.get("volume"), tags.get("volsafe-id", "")
    if not volume or not VOLUME_NAME.fullmatch(volume) or len(volume) > 255 or not STAMP.fullmatch(stamp):
        return None  # not one of volsafe's, or a name that could point anywhere (``../..``)
    if not re.fullmatch(r"[0-9a-f]{8,64}", str(snapshot.get("id", ""))):
        return None  # an id is handed to restic as an argument: never one that reads as an option
    streamed = STREAM_TAG in tags
    if streamed and "volsafe-size" not in tags:
        return None  # a streamed backup that never finished (its sizes are tagged on only at the end)
    digest = tags.get("volsafe-digest", "")
    # A streamed snapshot's sizes are always tags (above: they mark it finished); others' may be recorded.
    sizes = (recorded or {}).get(f"{volume}@{stamp}", {}) if "volsafe-size" not in tags and not streamed else {}
    meta = decode_meta(tags.get("volsafe-meta", ""))
    created = _parse_time(snapshot.get("time", ""))
    return Manifest(
        backup_id=BackupId(volume, stamp),
        created=created,
        volume_labels=_str_map(meta.get("labels")),
        volume_driver=str(meta.get("driver") or "local"),
        volume_driver_opts=_str_map(meta.get("driver_opts")),
        source_hostname=str(snapshot.get("hostname") or ""),
        source_docker_id=str(meta.get("docker_id") or ""),
        volsafe_version=str(meta.get("version") or ""),
        tar_size=sizes.get("size", 0) or _int(tags.get("volsafe-size")),
        stored_size=sizes.get("added", 0) or _int(tags.get("volsafe-added")),
        sha256="",
        entries=sizes.get("entries", 0) or _int(tags.get("volsafe-entries")),
        compression="restic",
        compression_level=0,
        content_digest=DIGEST_PREFIX + digest if re.fullmatch(r"[0-9a-f]{64}", digest) else "",
        extra={"restic_snapshot": snapshot.get("id", ""), "restic_path": _top(snapshot), **({"restic_mode": "stream"} if streamed else {})},
    )


def _top(snapshot: dict[str, Any]) -> str:
    """Return the name of the snapshot's one top-level directory (the volume's name when backed up)."""
    paths = snapshot.get("paths") or []
    top = paths[0].rstrip("/").rpartition("/")[2] if len(paths) == 1 and isinstance(paths[0], str) else ""
    return top if VOLUME_NAME.fullmatch(top) else ""  # never "..", "." or a path: it names a directory to move


def _parse_time(text: str) -> datetime:
    # restic prints RFC 3339 with nanoseconds; Python takes at most microseconds.
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        return datetime.fromtimestamp(0, timezone.utc)
    fraction = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        return datetime.fromisoformat(match.group(1) + fraction + zone).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # year 0, or a zone that moves it out of range
        return datetime.fromtimestamp(0, timezone.utc)
