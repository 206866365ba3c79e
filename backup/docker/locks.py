"""Per-volume locks, so that two volsafe processes on one host never back up or restore a volume at once.

A lock is ``flock`` on a file named after the daemon's ID and the volume, in ``$VOLSAFE_LOCK_DIR``,
else ``/run/volsafe`` (root), else ``$XDG_RUNTIME_DIR/volsafe``, else ``/tmp/volsafe-UID``. The
kernel releases it when its holder dies, even by ``kill -9``, so a crash never leaves a stale lock.
The holder writes its pid and command line into the file, so a waiting process can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterator

from backup.docker.host import DockerHost
from backup.errors import VolsafeError
from backup.private_files import open_private, private_dirs

log = logging.getLogger("volsafe.locks")

LOCK_DIR_ENV = "VOLSAFE_LOCK_DIR"
DEFAULT_WAIT = 600.0  # seconds a backup or restore waits for another one of the same volume
_POLL = 0.2


class VolumeBusy(VolsafeError):
    """Another volsafe process holds the volume's lock, and waiting for it timed out."""


def lock_dir() -> Path:
    """Return the directory for lock files (see the module's docstring for the order)."""
    given = os.environ.get(LOCK_DIR_ENV)
    if given:
        return Path(given)
    if os.geteuid() == 0 and Path("/run").is_dir():
        return Path("/run/volsafe")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "volsafe"
    return Path(f"/tmp/volsafe-{os.geteuid()}")


def lock_path(identity: tuple[str, ...], volume: str) -> Path:
    """Return the lock file of ``volume`` on the daemon with ``identity`` (DockerHost.identity)."""
    daemon_id, rest = (identity[0] or "unknown"), identity[1:]
    if any(rest):
        # Several daemons on one machine can share an ID; their data roots tell them apart.
        daemon_id += "-" + hashlib.sha256("\0".join(rest).encode()).hexdigest()[:12]
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{daemon_id}--{volume}")
    return lock_dir() / f"{key}.lock"


def _holder(fd: int) -> str:
    """Return who holds the lock, as its holder wrote it ("pid 123: volsafe backup db"), or '' if unknown."""
    try:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        return ""


@contextlib.contextmanager
def volume_lock(host: DockerHost, volume: str, *, action: str, wait: float = DEFAULT_WAIT) -> Iterator[None]:
    """Hold the lock of ``volume`` on ``host``'s daemon for the duration of the block.

    Waits up to ``wait`` seconds for another holder. Raises VolumeBusy naming the holder when
    that runs out, VolsafeError if the lock file cannot be opened.
    """
    with _held(lock_path(host.identity, volume), volume, action, wait):
        yield


@contextlib.contextmanager
def volume_locks(volumes: list[tuple[DockerHost, str]], *, action: str, wait: float = DEFAULT_WAIT) -> Iterator[None]:
    """Hold the locks of several (host, volume) pairs for the block, as ``volume_lock`` does.

    They are taken in one global order, so two processes that want overlapping sets never wait
    for each other in a circle. Raises VolumeBusy or VolsafeError, holding none of them then.
    """
    paths = {lock_path(host.identity, volume): volume for host, volume in volumes}
    with contextlib.ExitStack() as stack:
        for path in sorted(paths):
            stack.enter_context(_held(path, paths[path], action, wait))
        yield


@contextlib.contextmanager
def _held(path: Path, volume: str, action: str, wait: float) -> Iterator[None]:
    try:
        private_dirs(path.parent)
        _check_owned(path.parent)
        fd = open_private(path, os.O_RDWR)  # 0600; a link planted in its place is never followed
    except OSError as exc:
        raise VolsafeError(f"cannot open the lock file {path}: {exc.strerror or exc}") from None
    try:
        _acquire(fd, volume, action, wait)
        command = " ".join([Path(sys.argv[0]).name or "volsafe", *sys.argv[1:]])[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {action} ({command})\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _check_owned(directory: Path) -> None:
    """Raise VolsafeError unless ``directory`` (and the link to it, if it is one) belongs to this
    user or to root.

    ``/tmp/volsafe-UID`` could have been made by someone else first; in their directory they could
    swap our lock files or read who holds them.
    """
    trusted = {os.geteuid(), 0}
    for owner in (os.lstat(directory).st_uid, os.stat(directory).st_uid):
        if owner not in trusted:
            raise VolsafeError(
                f"lock directory {directory} belongs to another user (uid {owner}): "
                f"remove it, or set {LOCK_DIR_ENV} to a directory of your own"
            )


def _acquire(fd: int, volume: str, action: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = _holder(fd) or "another volsafe process"
        if time.monotonic() >= deadline:
            raise VolumeBusy(f"volume {volume!r} is busy: {holder} holds its lock (waited {wait:g}s before the {action})")
        if not announced:
            log.warning("volume %s is busy (%s); waiting up to %gs", volume, holder, wait)
            announced = True
        time.sleep(_POLL)
