"""A backend that keeps objects as files below a local directory.

Whoever can write to the directory must not be able to make volsafe read, list or remove anything
outside it: every path below the root is walked one component at a time, relative to an open
directory (``dir_fd``), with ``O_NOFOLLOW``. A symbolic link, FIFO, socket or device inside the store
is never an object: ``list`` skips it with a warning, ``open``/``stat``/``remove`` refuse it. Only
the root itself may be a link (it is the path the user gave).

Files are created 0600 and directories 0700, whatever the umask: the archives hold every volume's
data, and a manifest that others could rewrite would steer a restore.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat as stat_module
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from storage_backends.base import (
    Backend,
    NotFound,
    ObjectInfo,
    PermanentError,
    TransientError,
    check_key,
)

log = logging.getLogger("volsafe.storage")

# Temporary files carry this marker so that ``list`` never reports them and a later run can tell
# them from real objects. They sit beside their final name so that the rename stays on one filesystem.
TEMP_MARKER = ".volsafe-partial-"

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dirs(path: str | os.PathLike[str]) -> None:
    """Create directory ``path`` and its missing parents, each exactly 0700 whatever the umask;
    existing ones are left as they are. (Also what volsafe's state files use: backup.private_files.)"""
    path = Path(path)
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, DIR_MODE)  # exactly 0700, whatever the umask took away
        finally:
            os.close(fd)
# How deep ``list`` descends below the root; volsafe's own keys are two levels deep.
MAX_LIST_DEPTH = 32

# Errors that no retry will cure. Anything else from the OS counts as transient.
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ELOOP}

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the store must not hang; the type is checked right after.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _os_error(url: str, action: str, key: str, err: OSError) -> Exception:
    """Return the typed BackendError for an OSError raised while doing ``action`` on ``key``."""
    reason = err.strerror or str(err)
    message = f"{url}: cannot {action} {key}: {reason}"
    if err.errno == errno.ENOENT:
        return NotFound(message)
    if err.errno in _PERMANENT_ERRNOS:
        return PermanentError(message)
    return TransientError(message)


class _NotAFile(Exception):
    """A path below the root is a link or other non-regular file where volsafe expects a file or directory."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _kind(mode: int) -> str:
    if stat_module.S_ISLNK(mode):
        return "a symbolic link"
    if stat_module.S_ISDIR(mode):
        return "a directory"
    if stat_module.S_ISFIFO(mode):
        return "a FIFO"
    if stat_module.S_ISSOCK(mode):
        return "a socket"
    return "a device or other special file"


class LocalBackend(Backend):
    """Objects are files under ``root``; a key's ``/`` separators become subdirectories."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().absolute()
        self.url = self.root.as_uri()
        self._warned: set[str] = set()

    # -- walking below the root without following links ---------------------------------------

    def _refused(self, action: str, key: str, problem: _NotAFile) -> PermanentError:
        return PermanentError(f"{self.url}: cannot {action} {key}: {problem.what} (links and special files in a store are never followed)")

    def _make_root(self) -> None:
        """Create the root and any missing parents, each 0700."""
        private_dirs(self.root)

    def _open_root(self, create: bool) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
        self._make_root()
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    @staticmethod
    def _open_child_dir(parent: int, name: str, create: bool) -> int:
        """Return an fd of directory ``name`` in ``parent``, never through a link; create it (0700) if asked."""
        made = False
        if create:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=parent)
                made = True
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                try:
                    mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                except OSError:
                    raise exc from None
                if not stat_module.S_ISREG(mode) and not stat_module.S_ISDIR(mode):
                    raise _NotAFile(f"{name} is {_kind(mode)}") from None
            raise
        if made:
            os.fchmod(fd, DIR_MODE)
        return fd

    @contextlib.contextmanager
    def _dirs(self, parts: list[str], create: bool = False) -> Iterator[list[int]]:
        """Yield open fds of the root and of each directory in ``parts`` below it (closed on exit)."""
        fds = [self._open_root(create)]
        try:
            for name in parts:
                fds.append(self._open_child_dir(fds[-1], name, create))
            yield fds
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def _lstat_file(self, parent: int, name: str) -> os.stat_result:
        """Return the stat of regular file ``name`` in ``parent``. Raises FileNotFoundError for a
        missing name or a directory (not an object), _NotAFile for a link or special file."""
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat_module.S_ISDIR(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "no such object (a directory)")
        if not stat_module.S_ISREG(st.st_mode):
            raise _NotAFile(f"it is {_kind(st.st_mode)}")
        return st

    # -- the Backend interface -----------------------------------------------------------------

    def save(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write to a temporary file beside the target, fsync, then rename over it. Returns the size."""
        *parts, name = check_key(key).split("/")
        tmp = f"{TEMP_MARKER}{name}-{secrets.token_hex(4)}"
        written = 0
        try:
            with self._dirs(parts, create=True) as fds:
                parent = fds[-1]
                out = os.fdopen(os.open(tmp, _CREATE_FLAGS, FILE_MODE, dir_fd=parent), "wb")
                try:
                    with out:
                        os.fchmod(out.fileno(), FILE_MODE)  # exactly 0600, whatever the umask
                        for chunk in chunks:
                            out.write(chunk)
                            written += len(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                    # rename never follows a link at the target: it replaces the name itself.
                    os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=parent)
                    raise
                self._fsync_dir(parent)
        except _NotAFile as exc:
            raise self._refused("write", key, exc) from None
        except OSError as exc:
            raise _os_error(self.url, "write", key, exc) from exc
        return written

    @staticmethod
    def _fsync_dir(fd: int) -> None:
        # Makes the rename durable; some filesystems refuse fsync on a directory, which is harmless.
        try:
            os.fsync(fd)
        except OSError:
            pass

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """Return the file opened for reading at ``offset``. Raises NotFound."""
        *parts, name = check_key(key).split("/")
        try:
            with self._dirs(parts) as fds:
                fd = os.open(name, _READ_FLAGS, dir_fd=fds[-1])
            try:
                mode = os.fstat(fd).st_mode
                if stat_module.S_ISDIR(mode):
                    raise FileNotFoundError(errno.ENOENT, "no such object (a directory)")
                if not stat_module.S_ISREG(mode):
                    raise _NotAFile(f"it is {_kind(mode)}")
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
        except _NotAFile as exc:
            raise self._refused("read", key, exc) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # O_NOFOLLOW met a link; a socket cannot be opened
                raise self._refused("read", key, _NotAFile("it is a symbolic link or special file")) from None
            raise _os_error(self.url, "read", key, exc) from exc
        f = os.fdopen(fd, "rb")
        if offset:
            f.seek(offset)
        return f

    def stat(self, key: str) -> ObjectInfo:
        """Return size and modification time of the file. Raises NotFound."""
        *parts, name = check_key(key).split("/")
        try:
            with self._dirs(parts) as fds:
                st = self._lstat_file(fds[-1], name)
        except _NotAFile as exc:
            raise self._refused("stat", key, exc) from None
        except OSError as exc:
            raise _os_error(self.url, "stat", key, exc) from exc
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the complete files whose key starts with ``prefix``.

        Temporary files are skipped; so, with a warning, are links, special files, directories
        that cannot be read and anything deeper than MAX_LIST_DEPTH. Raises BackendError only if
        the root itself cannot be read (a missing root lists as empty).
        """
        check_key(prefix, allow_empty=True)
        try:
            root = self._open_root(create=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _os_error(self.url, "list", prefix or "/", exc) from exc
        stack: list[tuple[int, Iterator[str], str]] = []
        try:
            try:
                names = os.listdir(root)
            except OSError as exc:
                raise _os_error(self.url, "list", prefix or "/", exc) from exc
            stack.append((root, iter(sorted(names)), ""))
            root = -1  # owned by the stack now
            while stack:
                fd, names_left, rel = stack[-1]
                name = next(names_left, None)
                if name is None:
                    os.close(stack.pop()[0])
                    continue
                key = rel + name
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue  # removed while we walked
                if stat_module.S_ISDIR(st.st_mode):
                    below = key + "/"
                    if not (below.startswith(prefix) or prefix.startswith(below)):
                        continue
                    if len(stack) >= MAX_LIST_DEPTH:
                        self._warn(below, f"deeper than {MAX_LIST_DEPTH} levels")
                        continue
                    try:
                        child = self._open_child_dir(fd, name, create=False)
                    except _NotAFile as exc:
                        self._warn(below, exc.what)
                        continue
                    except OSError as exc:
                        if exc.errno != errno.ENOENT:
                            self._warn(below, f"cannot read it: {exc.strerror or exc}")
                        continue
                    try:
                        child_names = os.listdir(child)
                    except OSError as exc:
                        os.close(child)
                        self._warn(below, f"cannot read it: {exc.strerror or exc}")
                        continue
                    stack.append((child, iter(sorted(child_names)), below))
                    continue
                if name.startswith(TEMP_MARKER):
                    continue
                if not stat_module.S_ISREG(st.st_mode):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):  # e.g. a link to a directory
                        self._warn(key, f"it is {_kind(st.st_mode)}")
                    continue
                if not key.startswith(prefix):
                    continue
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))
        finally:
            if root >= 0:
                os.close(root)
            for fd, _names, _rel in stack:
                os.close(fd)

    def _warn(self, key: str, problem: str) -> None:
        """Warn once per backend and path that ``list`` skipped it."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: skipping %s: %s (links and special files in a store are never followed)", self.url, key, problem)

    def remove(self, key: str) -> None:
        """Delete the file, and its directory if that is now empty. Raises NotFound."""
        *parts, name = check_key(key).split("/")
        try:
            with self._dirs(parts) as fds:
                self._lstat_file(fds[-1], name)
                os.unlink(name, dir_fd=fds[-1])  # unlink never follows a link
                if parts:
                    with contextlib.suppress(OSError):
                        os.rmdir(parts[-1], dir_fd=fds[-2])  # fails if not empty: fine
        except _NotAFile as exc:
            raise self._refused("remove", key, exc) from None
        except OSError as exc:
            raise _os_error(self.url, "remove", key, exc) from exc


# -- the "local" type: [backends.NAME] with type = "local", plain paths and file:// URLs -----------
# (Imported here, after the class, so that this block is the module's whole declaration.)

from urllib.parse import unquote, urlparse  # noqa: E402

from storage_backends.registry import BackendType, register  # noqa: E402
from storage_backends.settings import TEXT, Setting  # noqa: E402


def from_location(location: str) -> LocalBackend:
    """Return the backend for a directory path or a ``file:///PATH`` URL. Raises PermanentError."""
    if "://" not in location:
        return LocalBackend(location)
    parsed = urlparse(location)
    if parsed.netloc not in ("", "localhost"):
        raise PermanentError(f"{location}: file:// URLs must name a local path (file:///path)")
    return LocalBackend(unquote(parsed.path))


register(
    BackendType(
        "local",
        settings=(Setting("path", TEXT, "directory that holds the backups", required=True),),
        create=lambda settings: LocalBackend(settings["path"]),
        schemes=("file",),
        from_url=from_location,
        paths=True,
    )
)
