"""Find the backend for a location string by its URL scheme."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from storage_backends.base import Backend, PermanentError


def open_backend(location: str) -> Backend:
    """Return the backend for ``location``: a directory path, ``file://PATH`` or ``s3://BUCKET[/PREFIX]``.

    The backend comes wrapped in the default retry policy (transient errors are retried with
    backoff). Raises PermanentError for an unknown scheme or a malformed location.
    """
    from storage_backends.retry import with_retries

    return with_retries(_open_bare(location))


def _open_bare(location: str) -> Backend:
    if "://" not in location:
        from storage_backends.local import LocalBackend

        return LocalBackend(location)
    parsed = urlparse(location)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        from storage_backends.local import LocalBackend

        if parsed.netloc not in ("", "localhost"):
            raise PermanentError(f"{location}: file:// URLs must name a local path (file:///path)")
        return LocalBackend(unquote(parsed.path))
    if scheme == "s3":
        from storage_backends.s3 import S3Backend

        return S3Backend.from_url(location)
    raise PermanentError(f"{location}: unknown backend scheme {scheme!r} (use a path, file:// or s3://)")
