"""BackgroundConsumer: order, errors surfacing in the feeding thread, the ``behind`` wait, clean stop."""

import threading

import pytest

from backup.background import BackgroundConsumer


def test_consumes_every_chunk_in_order():
    seen = []
    with BackgroundConsumer(seen.append, "t") as c:
        for i in range(100):
            c.feed(bytes([i]))
        c.wait()
        assert seen == [bytes([i]) for i in range(100)]
    assert not c._thread.is_alive()


def test_error_is_raised_by_the_next_feed_and_by_wait():
    def consume(chunk):
        if chunk == b"bad":
            raise ValueError("malformed header")

    with BackgroundConsumer(consume, "t", depth=1) as c:
        c.feed(b"ok")
        c.feed(b"bad")
        with pytest.raises(ValueError, match="malformed header"):
            c.wait()
        with pytest.raises(ValueError, match="malformed header"):
            c.feed(b"more")
    assert not c._thread.is_alive()


def test_wait_behind_leaves_only_the_newest_chunks_unconsumed():
    release = threading.Event()
    seen = []

    def consume(chunk):
        if chunk == b"2":
            release.wait(10)
        seen.append(chunk)

    with BackgroundConsumer(consume, "t") as c:
        c.feed(b"1")
        c.wait(behind=0)
        assert seen == [b"1"]
        c.feed(b"2")
        c.wait(behind=1)  # returns while b"2" is still being consumed
        assert seen == [b"1"]
        release.set()
        c.wait()
        assert seen == [b"1", b"2"]


def test_leaving_the_block_on_an_exception_stops_the_thread():
    release = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with BackgroundConsumer(lambda _chunk: release.wait(10), "t", depth=1) as c:
            c.feed(b"a")
            c.feed(b"b")
            release.set()
            raise KeyboardInterrupt
    assert not c._thread.is_alive()
