"""Run a chunk producer in its own thread, so that reading overlaps with compressing.

Reading Docker's archive stream is Python work (HTTP chunk decoding) while compressing and hashing
are C work that releases the GIL; one thread for each lets both cores work at once.
"""

from __future__ import annotations

import threading
from typing import Generator, Iterable

from backup.streams.channel import Channel


def read_ahead(chunks: Iterable[bytes], depth: int = 8) -> Generator[bytes, None, None]:
    """Yield the items of ``chunks``, produced by a background thread up to ``depth`` items ahead.

    An exception in the producer is re-raised here. When the consumer stops early (an exception,
    or closing this generator), the producer stops at its next item; a producer blocked in a read
    is unblocked by whoever owns the underlying stream closing it.
    """
    items = Channel(depth, "read-ahead")

    def pump() -> None:
        try:
            for chunk in chunks:
                items.put(chunk)  # raises Stopped once the consumer has gone
            items.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer (nothing, once it stopped)
            items.fail(exc)

    thread = threading.Thread(target=pump, name="read-ahead", daemon=True)
    thread.start()
    try:
        yield from items
    finally:
        items.stop()
