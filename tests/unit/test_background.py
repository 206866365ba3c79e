"""BackgroundConsumer: order, errors surfacing in the feeding thread, the ``behind`` wait, clean stop."""

import threading

import pytest

from backup.streams.background import BackgroundConsumer, ClosedError


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


def test_wait_behind_blocks_until_only_the_newest_chunks_are_unconsumed():
    release_first = threading.Event()
    release_second = threading.Event()
    seen = []

    def consume(chunk):
        (release_first if chunk == b"1" else release_second).wait(10)
        seen.append(chunk)

    with BackgroundConsumer(consume, "t") as c:
        c.feed(b"1")
        c.feed(b"2")
        waiter = threading.Thread(target=c.wait, kwargs={"behind": 1})
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive(), "wait(behind=1) returned while two chunks were unconsumed"
        release_first.set()
        waiter.join(5)
        assert not waiter.is_alive() and seen == [b"1"]  # returned with b"2" still in consume
        release_second.set()
        c.wait()
        assert seen == [b"1", b"2"]


def test_feed_after_close_raises_instead_of_blocking():
    c = BackgroundConsumer(lambda _chunk: None, "t", depth=1)
    c.close()
    done = []

    def feed_many():
        with pytest.raises(ClosedError):
            for _ in range(10):
                c.feed(b"x")
        done.append(True)

    feeder = threading.Thread(target=feed_many)
    feeder.start()
    feeder.join(5)
    assert done == [True]


def test_leaving_the_block_on_an_exception_stops_the_thread():
    release = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with BackgroundConsumer(lambda _chunk: release.wait(10), "t", depth=1) as c:
            c.feed(b"a")
            c.feed(b"b")
            release.set()
            raise KeyboardInterrupt
    c._thread.join(5)
    assert not c._thread.is_alive()
