"""A readable stream whose ``close`` never waits for a read under way in another thread.

Restore reads the stored archive in a read-ahead thread. When SIGTERM or Ctrl-C stops the main
thread, its clean-up closes that stream; but a store that stopped answering (a stalled NAS, an S3
connection that went quiet) leaves the read-ahead thread blocked in a read, and closing an
``io.BufferedReader`` (a local store's archive) takes the lock that read holds: the command would
wait as long as the store stalls, with the staging directory and the helper still in place.
``DeferredClose`` lets the clean-up go on: a close while a read is under way only marks the stream
closed, and the reading thread closes the underlying stream as soon as its read returns (the
read-ahead thread is a daemon, so a read that never returns does not keep the process alive).
"""

from __future__ import annotations

import threading
from typing import BinaryIO


class DeferredClose:
    """Wraps a binary stream read with ``read``; see the module docstring. A context manager."""

    def __init__(self, inner: BinaryIO):
        self._inner = inner
        self._lock = threading.Lock()
        self._reading = 0
        self._closed = False  # asked to close
        self._inner_closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            if self._closed:
                raise ValueError("read of a closed stream")
            self._reading += 1
        try:
            return self._inner.read(size)
        finally:
            with self._lock:
                self._reading -= 1
                last = self._closed and self._reading == 0 and not self._inner_closed
                self._inner_closed |= last
            if last:  # closed while this read was under way: the close falls to this thread
                self._inner.close()

    def close(self) -> None:
        """Close now, or, while a read is under way, as soon as it returns (without waiting for it)."""
        with self._lock:
            self._closed = True
            if self._reading or self._inner_closed:
                return
            self._inner_closed = True
        self._inner.close()

    def __enter__(self) -> DeferredClose:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
