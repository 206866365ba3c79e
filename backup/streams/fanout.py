"""Write one stream to several backends at once, reading the source only once (the 3-2-1 rule).

Each backend's ``save`` runs in its own thread and pulls chunks from a small bounded queue, so
memory stays at a few chunks per backend and a slow backend slows the stream instead of growing a
buffer. A backend that fails drops out; the others carry on. If the source itself fails (a broken
Docker stream, Ctrl-C), every ``save`` sees the failure from its chunk iterator and cleans up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterable

from backup.streams.channel import Channel, Stopped
from storage_backends import Backend

QUEUE_DEPTH = 4


class SourceFailed(Exception):
    """Raised inside a backend's chunk iterator when the source stream failed or was interrupted."""


@dataclass
class _Writer:
    backend: Backend
    chunks: Channel = field(default_factory=lambda: Channel(QUEUE_DEPTH, "fan-out"))
    thread: threading.Thread | None = None
    stored: int | None = None
    error: BaseException | None = None

    def run(self, key: str) -> None:
        try:
            self.stored = self.backend.save(key, iter(self.chunks))
        except BaseException as exc:  # noqa: BLE001 - reported per backend by save_to_all
            self.error = exc
        finally:
            self.chunks.stop()  # a put waiting on this backend returns (False) instead of waiting for ever

    def put(self, chunk: bytes) -> bool:
        """Queue ``chunk`` unless this writer has died; return whether it is still alive."""
        try:
            self.chunks.put(chunk)
            return True
        except Stopped:
            return False


@dataclass(frozen=True)
class SaveOutcome:
    """One backend's result: bytes stored, or the error that stopped it."""

    backend: Backend
    stored: int | None
    error: BaseException | None

    @property
    def ok(self) -> bool:
        return self.error is None


def save_to_all(backends: list[Backend], key: str, chunks: Iterable[bytes]) -> list[SaveOutcome]:
    """Save ``chunks`` under ``key`` on every backend concurrently; return one outcome per backend.

    Backend failures are returned, not raised. If iterating ``chunks`` raises, every save is
    aborted (each backend removes its partial object) and the source's exception propagates.
    """
    writers = [_Writer(b) for b in backends]
    for writer in writers:
        writer.thread = threading.Thread(target=writer.run, args=(key,), name=f"save:{writer.backend.url}", daemon=True)
        writer.thread.start()
    try:
        for chunk in chunks:
            alive = [w.put(chunk) for w in writers]
            if not any(alive):
                break  # every backend failed: stop reading the source
        for writer in writers:
            writer.chunks.close()
    except BaseException as exc:
        for writer in writers:
            writer.chunks.fail(SourceFailed(f"source stream failed: {exc!r}"))
        _join(writers)
        raise
    _join(writers)
    return [SaveOutcome(w.backend, w.stored, w.error) for w in writers]


def _join(writers: list[_Writer]) -> None:
    for writer in writers:
        assert writer.thread is not None
        writer.thread.join()
