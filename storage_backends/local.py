"""A backend that keeps objects as files below a local directory."""

from __future__ import annotations

import errno
import os
import secrets
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

# Temporary files carry this marker so that ``list`` never reports them and a later run can tell
# them from real objects. They sit beside their final name so that the rename stays on one filesystem.
TEMP_MARKER = ".volsafe-partial-"

# Errors that no retry will cure. Anything else from the OS counts as transient.
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


def _os_error(url: str, action: str, key: str, err: OSError) -> Exception:
    """Return the typed BackendError for an OSError raised while doing ``action`` on ``key``."""
    reason = err.strerror or str(err)
    message = f"{url}: cannot {action} {key}: {reason}"
    if err.errno == errno.ENOENT:
        return NotFound(message)
    if err.errno in _PERMANENT_ERRNOS:
        return PermanentError(message)
    return TransientError(message)


class LocalBackend(Backend):
    """Objects are files under ``root``; a key's ``/`` separators become subdirectories."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().absolute()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def save(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write to a temporary file beside the target, fsync, then rename over it. Returns the size."""
        path = self._path(key)
        tmp = path.with_name(f"{TEMP_MARKER}{path.name}-{secrets.token_hex(4)}")
        written = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise _os_error(self.url, "write", key, exc) from exc
            raise
        self._fsync_dir(path.parent)
        return written

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        # Makes the rename durable; some filesystems refuse fsync on a directory, which is harmless.
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """Return the file opened for reading at ``offset``. Raises NotFound."""
        try:
            f = open(self._path(key), "rb")
        except OSError as exc:
            raise _os_error(self.url, "read", key, exc) from exc
        if offset:
            f.seek(offset)
        return f

    def stat(self, key: str) -> ObjectInfo:
        """Return size and modification time of the file. Raises NotFound."""
        try:
            st = self._path(key).stat()
        except OSError as exc:
            raise _os_error(self.url, "stat", key, exc) from exc
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the complete files whose key starts with ``prefix``; temporary files are skipped."""
        check_key(prefix, allow_empty=True)
        # Walk only the deepest directory the prefix names in full, then filter by the rest.
        base_dir = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base_dir.is_dir():
            return

        def unreadable(err: OSError) -> None:
            if err.errno == errno.ENOENT:
                return  # a directory removed while we walk is no failure
            where = os.path.relpath(err.filename, self.root) if err.filename else "."
            raise _os_error(self.url, "list", "the directory" if where == "." else f"{where}/", err) from err

        for dirpath, _dirnames, filenames in os.walk(base_dir, onerror=unreadable):
            for name in filenames:
                if name.startswith(TEMP_MARKER):
                    continue
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue  # removed while we walked
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def remove(self, key: str) -> None:
        """Delete the file, and its directory if that is now empty. Raises NotFound."""
        path = self._path(key)
        try:
            path.unlink()
        except OSError as exc:
            raise _os_error(self.url, "remove", key, exc) from exc
        try:
            path.parent.rmdir()
        except OSError:
            pass  # not empty, or the root itself: both fine


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
