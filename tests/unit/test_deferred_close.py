"""DeferredClose: closing a stream never waits for a read that another thread has under way."""

from __future__ import annotations

import io
import threading

import pytest

from backup.streams.deferred_close import DeferredClose


class _HeldRead(io.RawIOBase):
    """A raw stream whose first read blocks until ``go`` is set (a store that stopped answering)."""

    def __init__(self):
        self.entered, self.go = threading.Event(), threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.entered.set()
        assert self.go.wait(30)
        buffer[:1] = b"x"
        return 1


def test_close_during_a_blocked_read_returns_at_once_and_the_reader_closes_it_after():
    raw = _HeldRead()
    inner = io.BufferedReader(raw, 16)  # its close takes the lock the blocked read holds
    stream = DeferredClose(inner)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.read(1)), daemon=True)
    reader.start()
    assert raw.entered.wait(30)

    closer = threading.Thread(target=stream.close, daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive(), "close waited for the blocked read"
    assert stream.closed and not inner.closed

    raw.go.set()
    reader.join(30)
    assert got == [b"x"] and inner.closed  # the read finished, then closed what it read from
    with pytest.raises(ValueError):
        stream.read(1)


def test_close_without_a_read_under_way_closes_at_once():
    inner = io.BytesIO(b"abc")
    with DeferredClose(inner) as stream:
        assert stream.read(2) == b"ab"
    assert inner.closed and stream.closed
    stream.close()  # a second close is harmless
