"""Write one stream to several backends at once, reading the source only once (the 3-2-1 rule).

Each backend's ``save`` runs in its own thread and pulls chunks from a small bounded queue, so
memory stays at a few chunks per backend and a slow backend slows the stream instead of growing a
buffer. A backend that fails drops out; the others carry on. If the source itself fails (a broken
Docker stream, Ctrl-C), every ``save`` sees the failure from its chunk iterator and cleans up.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from storage_backends import Backend

QUEUE_DEPTH = 4
_END = object()


class SourceFailed(Exception):
    """Raised inside a backend's chunk iterator when the source stream failed or was interrupted."""


@dataclass
class _Writer:
    backend: Backend
    chunks: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_DEPTH))
    thread: threading.Thread | None = None
    stored: int | None = None
    error: BaseException | None = None

    def feed(self) -> Iterator[bytes]:
        while True:
            item = self.chunks.get()
            if item is _END:
                return
            if isinstance(item, SourceFailed):
                raise item
            yield item

    def run(self, key: str) -> None:
        try:
            self.stored = self.backend.save(key, self.feed())
        except BaseException as exc:  # noqa: BLE001 - reported per backend by save_to_all
            self.error = exc

    def put(self, item: object) -> bool:
        """Queue ``item`` unless this writer has died; return whether it is still alive."""
        while self.thread is not None and self.thread.is_alive():
            try:
                self.chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
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
            writer.put(_END)
    except BaseException as exc:
        for writer in writers:
            writer.put(SourceFailed(f"source stream failed: {exc!r}"))
        _join(writers)
        raise
    _join(writers)
    return [SaveOutcome(w.backend, w.stored, w.error) for w in writers]


def _join(writers: list[_Writer]) -> None:
    for writer in writers:
        assert writer.thread is not None
        writer.thread.join()
