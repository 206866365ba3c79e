"""read_ahead: order, the producer's error, and the producer stopping when the consumer leaves early.

The consuming runs in a helper thread joined with a deadline (``Running``), so a hang fails fast.
"""

from __future__ import annotations

import itertools
import threading

import pytest

from backup.streams.read_ahead import read_ahead
from tests.support.threads import DEADLINE, Running


def test_yields_every_chunk_in_order():
    chunks = [bytes([i]) * i for i in range(200)]
    assert Running(lambda: list(read_ahead(iter(chunks), depth=3))).finish() == chunks


def test_the_producers_error_is_raised_after_the_chunks_before_it():
    def source():
        yield b"a"
        yield b"b"
        raise OSError("docker stream broke")

    taken = []

    def consume():
        for chunk in read_ahead(source()):
            taken.append(chunk)

    with pytest.raises(OSError, match="docker stream broke"):
        Running(consume).finish()
    assert taken == [b"a", b"b"]


def test_closing_early_stops_a_producer_that_is_waiting_on_a_full_channel():
    before = set(threading.enumerate())
    produced = []

    def endless():
        for n in itertools.count():
            produced.append(n)
            yield b"x"

    ahead = read_ahead(endless(), depth=2)
    assert Running(lambda: next(ahead)).finish() == b"x"
    (pump,) = [t for t in threading.enumerate() if t not in before and t.name == "read-ahead"]
    ahead.close()
    pump.join(DEADLINE)
    assert not pump.is_alive()
    assert len(produced) <= 4  # one taken, two queued, one that was waiting to be put
