"""Files and directories that only their owner may read: 0600 and 0700, whatever the umask.

Status files, lock files and crash-recovery records name jobs, volumes and containers; a record that
others could rewrite would make volsafe restart containers it never stopped. The umask can only take
bits away from a mode given to open() or mkdir(), so each new file or directory gets its mode set
again with fchmod. Links are never followed for the file itself (``O_NOFOLLOW``).
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dirs(path: str | os.PathLike[str]) -> None:
    """Create directory ``path`` and its missing parents, each exactly 0700; existing ones are left as they are."""
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
            os.fchmod(fd, DIR_MODE)
        finally:
            os.close(fd)


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
