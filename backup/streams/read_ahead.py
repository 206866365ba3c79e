"""Run a chunk producer in its own thread, so that reading overlaps with compressing.

Reading Docker's archive stream is Python work (HTTP chunk decoding) while compressing and hashing
are C work that releases the GIL; one thread for each lets both cores work at once.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def read_ahead(chunks: Iterable[bytes], depth: int = 8) -> Iterator[bytes]:
    """Yield the items of ``chunks``, produced by a background thread up to ``depth`` items ahead.

    An exception in the producer is re-raised here. When the consumer stops early (an exception,
    or closing this generator), the producer stops at its next item; a producer blocked in a read
    is unblocked by whoever owns the underlying stream closing it.
    """
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failed(exc))

    thread = threading.Thread(target=pump, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
