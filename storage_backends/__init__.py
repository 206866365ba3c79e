"""Storage backends for volsafe: one interface (``base.Backend``), one module per backend."""

from storage_backends.base import (
    Backend,
    BackendError,
    NotFound,
    ObjectInfo,
    PermanentError,
    TransientError,
)
from storage_backends.registry import open_backend

__all__ = [
    "Backend",
    "BackendError",
    "NotFound",
    "ObjectInfo",
    "PermanentError",
    "TransientError",
    "open_backend",
]
