"""One bounded hand-off between two threads, with an end, a failure, and a way for either side to leave.

Every thread boundary in the pipelines (read-ahead, the background consumers, the fan-out to
backends, both directions of age encryption) is a producer putting items and a consumer taking
them, and each needs the same four things: memory bounded by a few items, an end after the last
one, the producer's error raised in the consumer after the items before it, and the consumer's
departure (an error, an early close) waking a producer blocked on a full channel instead of leaving
it there for good. ``Channel`` is that protocol; ``ChannelReader`` and ``ChannelWriter`` put a file
interface on either end for code (pyrage) that reads or writes streams rather than chunks.

The ends (``close``, ``fail``, ``stop``) take no room and never block. Only the first ``close`` or
``fail`` counts, and neither does anything after ``stop`` (nor ``stop`` after ``stop``), so clean-up
paths may call them unconditionally.
"""

from __future__ import annotations

import collections
import io
import threading
from typing import Iterator

_END = object()  # what _take returns at a clean end
_EMPTY = object()  # what _take returns when told not to wait and nothing is queued


class Closed(RuntimeError):
    """Raised by ``put`` once the producer side ended the channel (``close`` or ``fail``)."""


class Stopped(Exception):
    """Raised by ``put`` once the consumer side left with ``stop`` and no error (and by taking from a
    stopped channel)."""


class Channel:
    """A FIFO of items between a producer thread and a consumer thread, at most ``depth`` deep.

    Producer: ``put`` each item, then ``close`` (no more items) or ``fail(error)``. Consumer:
    iterate (or take what is there now with ``ready``), and ``stop`` on leaving early. ``depth=None``
    makes an unbounded channel, for a side whose size is bounded elsewhere (``put`` never waits).
    """

    def __init__(self, depth: int | None, name: str = "channel"):
        if depth is not None and depth < 1:
            raise ValueError("a channel holds at least one item")
        self.name = name
        self._depth = depth
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)  # an item arrived, or an end
        self._writable = threading.Condition(self._lock)  # room was made, or an end
        self._ended = False  # by the producer: close or fail
        self._failure: BaseException | None = None
        self._stopped = False  # by the consumer
        self._stop_error: BaseException | None = None

    def put(self, item: object) -> None:
        """Append ``item``, waiting while the channel is full.

        Raises the consumer's error (or Stopped) once the consumer has stopped, and Closed after
        ``close`` or ``fail``, including for a ``put`` that was waiting when that happened.
        """
        with self._lock:
            while True:
                if self._stopped:
                    raise self._stop_error if self._stop_error is not None else Stopped(f"{self.name}: the consumer stopped")
                if self._ended:
                    raise Closed(f"{self.name}: put after close")
                if self._depth is None or len(self._items) < self._depth:
                    break
                self._writable.wait()
            self._items.append(item)
            self._readable.notify()

    def close(self) -> None:
        """Producer: no more items. Iteration ends once the items already put are taken."""
        self._end(None)

    def fail(self, error: BaseException) -> None:
        """Producer: no more items, because of ``error``; the consumer gets it after the items already put."""
        self._end(error)

    def _end(self, failure: BaseException | None) -> None:
        with self._lock:
            if self._ended or self._stopped:
                return
            self._ended, self._failure = True, failure
            self._readable.notify_all()
            self._writable.notify_all()

    def stop(self, error: BaseException | None = None) -> None:
        """Consumer: take nothing more. Queued items are dropped; the producer's next (or current,
        waiting) ``put`` raises ``error``, or Stopped if none is given."""
        with self._lock:
            if self._stopped:
                return
            self._stopped, self._stop_error = True, error
            self._items.clear()
            self._readable.notify_all()
            self._writable.notify_all()

    def __iter__(self) -> Iterator:
        """Yield the items, waiting for each, until the end; there raise the producer's failure
        (on every later attempt too) if it failed. Raises Stopped after ``stop``."""
        while True:
            item = self._take(wait=True)
            if item is _END:
                return
            yield item

    def ready(self) -> Iterator:
        """Yield the items that are queued now, without waiting for more (raising the failure if
        the channel failed and every item before it was taken)."""
        while True:
            item = self._take(wait=False)
            if item is _END or item is _EMPTY:
                return
            yield item

    def _take(self, wait: bool) -> object:
        """The next item; _END at a clean end; _EMPTY when nothing is queued and ``wait`` is false."""
        with self._lock:
            while not self._items:
                if self._stopped:
                    raise Stopped(f"{self.name}: taken from after stop")
                if self._ended:
                    if self._failure is not None:
                        raise self._failure
                    return _END
                if not wait:
                    return _EMPTY
                self._readable.wait()
            item = self._items.popleft()
            self._writable.notify()
            return item

    def __len__(self) -> int:
        """The number of items queued now."""
        with self._lock:
            return len(self._items)


class ChannelReader(io.RawIOBase):
    """The consumer end of a channel of ``bytes``, as a readable stream.

    ``read`` returns pieces of at most one item; end of stream after ``close``; the producer's
    failure raised (on every read) after ``fail``. Closing the reader stops the channel (and io
    objects close when they are collected: keep a reader referenced while it is in use).
    """

    def __init__(self, channel: Channel):
        self.channel = channel
        self._buffer = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer and not self._done:
            item = self.channel._take(wait=True)
            if item is _END:
                self._done = True
            else:
                self._buffer = memoryview(item)  # type: ignore[arg-type]  # _take returns object (its sentinels); data items are bytes
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        self.channel.stop()
        super().close()


class ChannelWriter(io.RawIOBase):
    """The producer end of a channel, as a writable stream: each write puts a copy of its data.

    A write raises as ``put`` does (Stopped once the consumer left); closing the writer does not end
    the channel, since a writer's owner may still have to ``fail`` it instead.
    """

    def __init__(self, channel: Channel):
        self.channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.channel.put(bytes(data))
        return len(data)
