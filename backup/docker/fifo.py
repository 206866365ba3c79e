"""FIFOs on this machine that helper containers read or write through a bind mount: the fast data
path to and from a local Docker daemon, which no byte of it passes through.

Docker 20.10 moves a volume's data through dockerd on every API path: the archive endpoint costs
about 4 CPU-seconds per 600 MB in ``docker-tar`` and dockerd, and exec stdin, like ``put_archive``,
runs at about 150 MB/s. A FIFO in a private temporary directory, bind-mounted into the helper at
IO_DIR, costs neither. It works only when the daemon sees this machine's /tmp: volsafe running on
the host, talking to a local socket. Where that fails (volsafe in a container that does not share
/tmp, a daemon in a VM, an SELinux denial), callers fall back to the API path before any byte is
used, and ``mark_unavailable`` keeps them from trying again in this process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import select
import shutil
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from backup.streams.concurrency import raise_if_cancelled
from backup.docker.host import DockerHost
from backup.errors import VolsafeError

if TYPE_CHECKING:
    from docker.types import Mount  # the SDK loads with the first connection (backup.docker.host)

IO_DIR = "/volsafe/io"
FIFO_NAME = "tar"
ERRORS_NAME = "errors"
NAMESPACE_NAME = "pidns"  # the pid namespace of the pid in the directory's name (crash recovery reads it)
OWNER_NAME = "owner"  # JSON: the boot and Docker container of that process (recovery.owner_fields)
DATA_PATH_ENV = "VOLSAFE_DATA_PATH"  # "api" forces the Docker API paths
CONNECT_TIMEOUT = 30.0  # seconds for the helper's end of the FIFO to be opened
PIPE_SIZE = 1 << 20  # Linux lets any user raise a pipe's buffer to 1 MiB: 16x fewer reads and writes
READ_SIZE = 1 << 20

_unavailable: set[tuple[str, str]] = set()  # (daemon URL, image) whose helpers could not reach a FIFO


class FastPathUnavailable(VolsafeError):
    """The FIFO path could not start; nothing was read or written through it."""


def fifo_possible(host: DockerHost, image: str) -> bool:
    """Return whether the FIFO path is worth trying: Linux, a daemon on a local socket, not forced
    off, and not already failed for this daemon and image."""
    if os.environ.get(DATA_PATH_ENV, "").lower() == "api" or (host.url, image) in _unavailable:
        return False
    return sys.platform.startswith("linux") and host.url.startswith("unix://")


def mark_unavailable(host: DockerHost, image: str) -> None:
    """Remember, for the rest of this process, that helpers from ``image`` on ``host`` cannot use a FIFO."""
    _unavailable.add((host.url, image))


FIFO_DIR_PREFIX = "volsafe-io-"
_FIFO_DIR_NAME = re.compile(r"^volsafe-io-([0-9]+)-([0-9]+)-[A-Za-z0-9_]+$")


def fifo_dir_owner(name: str) -> tuple[int, str | None] | None:
    """Return (pid, process start time or None) of the volsafe process that made the FIFO
    directory named ``name``, or None if ``name`` is not one (or one from before pids were in it)."""
    found = _FIFO_DIR_NAME.match(name)
    if not found:
        return None
    return int(found.group(1)), (found.group(2) if found.group(2) != "0" else None)


class FifoDir:
    """A private temporary directory (0700) with a FIFO and an errors file that a helper, even one
    whose root owns neither (volsafe not run as root), can open: they are mode 0666 inside it.

    Its name holds this process's pid and start time, so that crash recovery can remove the
    directory once the process is gone (``kill -9`` leaves it behind)."""

    def __init__(self) -> None:
        from backup.quiesce.recovery import owner_fields, process_start_time

        pid = os.getpid()
        # Made under a name crash recovery does not match (the ".new" suffix), filled, then renamed
        # into place: a volsafe in another pid namespace never sees it without its namespace file
        # (it would look the pid up among its own processes and could remove a live directory).
        self.path = tempfile.mkdtemp(prefix=f"{FIFO_DIR_PREFIX}{pid}-{process_start_time(pid) or 0}-", suffix=".new")
        try:
            owner = owner_fields()
            with open(os.path.join(self.path, NAMESPACE_NAME), "w") as f:
                f.write(owner.pop("pid_namespace") or "")
            with open(os.path.join(self.path, OWNER_NAME), "w") as f:
                json.dump(owner, f)
            os.mkfifo(os.path.join(self.path, FIFO_NAME))
            open(os.path.join(self.path, ERRORS_NAME), "wb").close()
            os.chmod(os.path.join(self.path, FIFO_NAME), 0o666)
            os.chmod(os.path.join(self.path, ERRORS_NAME), 0o666)
            final = self.path.removesuffix(".new")
            os.rename(self.path, final)
            self.path = final
            self.fifo = os.path.join(self.path, FIFO_NAME)
            self.errors = os.path.join(self.path, ERRORS_NAME)
        except BaseException:
            self.remove()
            raise

    @property
    def mount(self) -> Mount:
        """Return the bind mount that puts this directory at IO_DIR in a helper."""
        from docker.types import Mount

        return Mount(IO_DIR, self.path, type="bind")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def fifo_dir() -> Iterator[FifoDir]:
    """Yield a new FifoDir; it is removed on exit."""
    made = FifoDir()
    try:
        yield made
    finally:
        made.remove()


def _raise_pipe_size(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class FifoReader:
    """The read end of a FIFO, non-blocking: ``read`` waits with poll, so a caller can notice a
    cancelled run, and ``close`` (from any thread) never races with a read in progress."""

    def __init__(self, path: str):
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a writer may open without waiting
        _raise_pipe_size(self._fd)
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)

    def read(self, wait_ms: int) -> bytes | None:
        """Return the next bytes; b"" at the end (a writer came and closed, or we were closed);
        None if nothing came within ``wait_ms`` (also before any writer opened the FIFO)."""
        with self._lock:
            if self._fd is None:
                return b""
            if not self._poller.poll(wait_ms):
                return None
            try:
                return os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def release_reader(path: str) -> None:
    """Let a reader that waits in open() on the FIFO at ``path`` go on: it reads an empty stream."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def write_all(path: str, chunks: Iterable[bytes], *, reader_alive: Callable[[], bool]) -> bool:
    """Open the FIFO at ``path`` for writing once its reader has opened it, write ``chunks`` to it
    and close it (the reader then sees the end). Return False if the reader stopped reading early
    (its exit code says why).

    Raises FastPathUnavailable if no reader came while ``reader_alive()`` held or within
    CONNECT_TIMEOUT (nothing of ``chunks`` was taken then); exceptions from ``chunks`` propagate,
    after the FIFO is closed (the reader sees a cut-short stream).
    """
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise FastPathUnavailable(f"cannot open the FIFO: {exc.strerror}") from None
        if not reader_alive():
            raise FastPathUnavailable("the helper ended without opening the FIFO")
        if time.monotonic() > deadline:
            raise FastPathUnavailable(f"the helper did not open the FIFO in {CONNECT_TIMEOUT:g}s")
        raise_if_cancelled()
        time.sleep(0.02)
    try:
        _raise_pipe_size(fd)
        os.set_blocking(fd, True)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BrokenPipeError:
                    return False
        return True
    finally:
        os.close(fd)
