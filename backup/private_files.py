"""Files and directories that only their owner may read: 0600 and 0700, whatever the umask.

Status files, lock files and crash-recovery records name jobs, volumes and containers; a record that
others could rewrite would make volsafe restart containers it never stopped. The umask can only take
bits away from a mode given to open() or mkdir(), so each new file or directory gets its mode set
again with fchmod. Links are never followed for the file itself (``O_NOFOLLOW``).
"""

from __future__ import annotations

import os

from storage_backends.local import DIR_MODE, FILE_MODE, private_dirs  # one implementation for stores and state

__all__ = ["DIR_MODE", "FILE_MODE", "open_private", "private_dirs", "write_private"]


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """Return an fd of ``path`` opened with ``flags`` (plus O_CREAT, O_NOFOLLOW, O_CLOEXEC), a file that is
    0600 afterwards if this user owns it (a new one always is). Raises OSError."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and st.st_mode & 0o7777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (created or truncated), which is 0600 afterwards. Raises OSError."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "wb") as out:
        out.write(data)
