"""Run a chunk consumer (a hash, the tar scanner) in its own thread, beside the stream it watches.

Profiling a backup showed one thread doing three things in turn for every chunk: scanning the tar
and hashing its data (content digest), handing the chunk to zstd, and hashing zstd's output. zstd's
workers and hashlib both release the GIL, so giving each watcher its own thread lets them run on
the other core instead of after one another. The counterpart for producers is ``read_ahead``.
"""

from __future__ import annotations

import threading
from typing import Callable

from backup.streams.channel import Channel
from backup.streams.channel import Closed as ClosedError  # noqa: F401 - raised by feed after close


class BackgroundConsumer:
    """Calls ``consume(chunk)`` for every chunk given to ``feed``, in order, in a background thread.

    Chunks must not change after they are fed (``bytes`` never do). The first exception ``consume``
    raises is kept and re-raised by the next ``feed`` or ``wait``; later chunks are then dropped
    unread, so a feeder never blocks on a dead consumer. Use it as a context manager: leaving the
    block stops the thread whatever happened. ``feed`` may be called from another thread (pyrage
    reads the stored stream from its own); after ``close`` it raises instead of blocking.
    """

    def __init__(self, consume: Callable[[bytes], object], name: str, depth: int = 4):
        self._consume = consume
        self._chunks = Channel(depth, name)
        self._done = threading.Condition()
        self._fed = 0
        self._consumed = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                self._consume(chunk)
                with self._done:
                    self._consumed += 1
                    self._done.notify_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the feeding thread
            with self._done:
                self._error = exc
                self._done.notify_all()
            self._chunks.stop(exc)  # the queued chunks are dropped; feed raises ``exc``

    def feed(self, chunk: bytes) -> None:
        """Queue ``chunk``; block while ``depth`` chunks wait. Raises what ``consume`` raised so far,
        and ClosedError once ``close`` was called (nothing would take the chunk any more)."""
        self._chunks.put(chunk)
        with self._done:
            self._fed += 1

    def wait(self, behind: int = 0) -> None:
        """Block until at most ``behind`` fed chunks are still unconsumed; raise what ``consume`` raised."""
        with self._done:
            self._done.wait_for(lambda: self._error is not None or self._consumed >= self._fed - behind)
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread once the queued chunks are handled (or dropped, after an error)."""
        self._chunks.close()
        self._thread.join()

    def __enter__(self) -> BackgroundConsumer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
