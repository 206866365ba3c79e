"""The one small interface every storage backend implements.

A backend stores opaque objects under string keys such as ``myvol/20261127T224450Z-1a2b.tar.zst``.
Keys are always relative to the backend's own root (a directory, or a bucket plus prefix) and use
``/`` as separator. The engine never builds paths or S3 keys itself; it hands keys to a backend.

Modelled on restic's backend interface: save, open, stat, list, remove. Retries, fan-out to several
backends and dry-run are wrappers around this interface, never loops inside one backend.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Iterable, Iterator

from storage_backends.errors import VolsafeError


class BackendError(VolsafeError):
    """A storage operation failed. ``str(err)`` is one line that names the backend and the cause.

    A VolsafeError (exit code 1), so callers need not translate it: the CLI reports it as it reports
    any other failure.
    """


class NotFound(BackendError):
    """The key does not exist in the backend."""


class PermanentError(BackendError):
    """Retrying cannot help: bad credentials, missing bucket, access denied, disk full, bad key."""


class TransientError(BackendError):
    """The operation may succeed if tried again: a timeout, a reset connection, a 5xx answer."""


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` and ``list`` report about one stored object."""

    key: str
    size: int
    modified: datetime | None = None


# Keys are plain relative paths: no empty, "." or ".." segments, no leading "/", no NUL or
# backslash. This is the single place that decides what may reach a filesystem path or S3 key.
_BAD_SEGMENT = re.compile(r"^(|\.|\.\.)\Z")


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """Return ``key`` if it is a safe relative object key (or prefix); raise PermanentError if not."""
    if key == "" and allow_empty:
        return key
    if not isinstance(key, str) or "\x00" in key or "\\" in key or key.startswith("/"):
        raise PermanentError(f"invalid object key {key!r}")
    parts = key.split("/")
    if allow_empty and key.endswith("/"):
        parts = parts[:-1]  # a prefix such as "myvol/" is fine
    if any(_BAD_SEGMENT.match(p) for p in parts):
        raise PermanentError(f"invalid object key {key!r}")
    return key


class Backend(abc.ABC):
    """A place that stores archives and manifests.

    Implementations must make ``save`` atomic: a reader sees either the complete object or no object
    at all, never a partial one, whatever happens to the process (exception, Ctrl-C, kill -9).
    """

    #: A display name for messages and ``list`` output, e.g. ``file:///srv/backups`` or
    #: ``s3://bucket/prefix``. Never holds a secret.
    url: str

    @abc.abstractmethod
    def save(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenation of ``chunks`` under ``key`` atomically, replacing any old object.

        Returns the number of bytes stored. If iterating ``chunks`` raises, or storing fails, nothing
        is left visible under ``key`` (an older object there stays as it was) and no partial upload
        or temporary file is left behind; the exception propagates (storage failures as
        BackendError subclasses).
        """

    @abc.abstractmethod
    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """Return a readable binary stream of the object from byte ``offset`` on.

        Raises NotFound if there is no such object.
        """

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Return the object's info. Raises NotFound if there is no such object."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every complete object whose key starts with ``prefix``, in no particular order.

        Temporary files and unfinished uploads are never listed.
        """

    @abc.abstractmethod
    def remove(self, key: str) -> None:
        """Delete the object. Raises NotFound if there is no such object."""

    def close(self) -> None:  # noqa: B027 -- an optional hook with a do-nothing default, not abstract
        """Release connections or other resources. The default does nothing."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
