"""The one registry of backend types: a type name maps to what its module declares.

Each backend module declares a ``BackendType`` (its ``[backends.NAME]`` settings, a constructor
from those settings, the URL schemes it opens) and registers it when it is imported, like restic's
``internal/backend``: one module per backend, one registry. Adding a backend is writing its module,
calling ``register`` in it, and naming the module in ``_MODULES`` (modules are imported only when one
of their types or schemes is first needed, so that a command that never touches S3 never loads
botocore). Everything else (config validation, ``--to``/``--from`` locations, the example config's
test) reads the types from here.

Every backend opened here comes wrapped in the default retry policy (``storage_backends.retry``).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlparse

from storage_backends.base import Backend, PermanentError
from storage_backends.settings import Setting

# The backends that ship with volsafe: type name -> the module that registers it, in the order the
# types are listed to the user. A plain directory path opens with the first type that takes paths.
_MODULES = {
    "local": "storage_backends.local",
    "s3": "storage_backends.s3",
    "restic": "backup.restic",  # not a Backend: a restic repository (see ``BackendType.repository``)
}


@dataclass(frozen=True)
class BackendType:
    """One kind of backend, as its module declares it."""

    name: str  # the ``type`` of a [backends.NAME] table
    settings: tuple[Setting, ...]  # the other keys of such a table
    create: Callable[[dict[str, Any]], Backend]  # from checked settings (each declared default filled in)
    schemes: tuple[str, ...] = ()  # the URL schemes ``open_backend`` opens with ``from_url``
    from_url: Callable[[str], Backend] | None = None  # takes "SCHEME://…" (or a plain path, if ``paths``)
    paths: bool = False  # a location without a scheme is a path this type opens
    # Problems between settings (e.g. one credential without the other), as messages; none by default.
    # It sees the settings given and the defaults of those not given (an invalid one is missing).
    check: Callable[[dict[str, Any]], Iterable[str]] = field(default=lambda settings: ())
    # Locations that start with one of these (e.g. "restic:") open with ``from_url``, before schemes.
    prefixes: tuple[str, ...] = ()
    # True for a target that is not a byte-object Backend (a restic repository): it is neither
    # wrapped in the retry policy nor handed to code that stores objects (``backup.restic``).
    repository: bool = False


_types: dict[str, BackendType] = {}


def register(kind: BackendType) -> BackendType:
    """Make ``kind`` known by its name (a later registration of the same name replaces it)."""
    _types[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget the type ``name`` (for tests that register their own)."""
    _types.pop(name, None)


def type_names() -> list[str]:
    """Return every type name, the built-in ones first, without importing any backend module."""
    return list(_MODULES) + [name for name in _types if name not in _MODULES]


def backend_type(name: str) -> BackendType | None:
    """Return the type ``name`` (importing its module on first use), or None if there is none."""
    if name not in _types and name in _MODULES:
        importlib.import_module(_MODULES[name])
    return _types.get(name)


def backend_types() -> list[BackendType]:
    """Return every type, importing every backend module."""
    return [kind for kind in map(backend_type, type_names()) if kind is not None]


def _find(wanted: Callable[[BackendType], bool]) -> BackendType | None:
    """Return the first type ``wanted`` accepts, importing backend modules only until one does."""
    for kind in _loaded():
        if wanted(kind):
            return kind
    return None


def _loaded() -> Iterator[BackendType]:
    seen = set()
    for name in list(_types) + type_names():  # those already imported first: they cost nothing
        if name not in seen:
            seen.add(name)
            kind = backend_type(name)
            if kind is not None:
                yield kind


def open_backend(location: str) -> Backend:
    """Return the backend for ``location``: a directory path, ``file://PATH``, ``s3://BUCKET[/PREFIX]``
    or another registered scheme.

    The backend comes wrapped in the default retry policy (transient errors are retried with
    backoff). Raises PermanentError for an unknown scheme or a malformed location.
    """
    from storage_backends.retry import with_retries

    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?!//)", location):  # "restic:/srv/repo", not "s3://…" or a path
        kind = _find(lambda k: any(location.startswith(p) for p in k.prefixes))
        if kind is not None and kind.from_url is not None:
            opened = kind.from_url(location)
            return opened if kind.repository else with_retries(opened)
    return with_retries(_open_bare(location))


def _open_bare(location: str) -> Backend:
    scheme = urlparse(location).scheme.lower() if "://" in location else None
    kind = _find(lambda k: k.paths) if scheme is None else _find(lambda k: scheme in k.schemes)
    if kind is None or kind.from_url is None:
        if scheme is None:
            raise PermanentError(f"{location}: no backend takes a plain path")
        known = [f"{s}://" for k in backend_types() for s in k.schemes]
        raise PermanentError(f"{location}: unknown backend scheme {scheme!r} (use a path, {_either(known)})")
    return kind.from_url(location)


def create_backend(type_name: str, settings: dict[str, Any]) -> Backend:
    """Return the backend of type ``type_name`` built from checked ``settings``, wrapped in the
    default retry policy like every backend opened by location. Raises BackendError for bad settings."""
    from storage_backends.retry import with_retries

    kind = backend_type(type_name)
    if kind is None:
        raise PermanentError(f"unknown backend type {type_name!r} (known: {', '.join(type_names())})")
    created = kind.create(settings)
    return created if kind.repository else with_retries(created)


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
