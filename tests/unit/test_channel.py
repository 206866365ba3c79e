"""Channel: order, the depth bound, and every way an end or a departure wakes the other side.

Blocking calls run in helper threads joined with a deadline, so a hang fails the test in seconds.
"Blocked" is observed, never assumed after a sleep: ``blocked`` waits (with a deadline) until the
thread is parked inside the channel's condition.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from backup.errors import Cancelled
from backup.streams.channel import Channel, ChannelReader, ChannelWriter, Closed, Stopped
from tests.support.threads import DEADLINE, Running, blocked


def test_items_come_out_in_order_and_close_ends_after_the_queued_ones():
    channel = Channel(3)
    for item in (b"a", b"b", b"c"):
        channel.put(item)
    channel.close()
    assert list(channel) == [b"a", b"b", b"c"]
    assert list(channel) == []  # the end stays the end


def test_many_items_through_a_small_channel_between_two_threads():
    channel = Channel(2)
    items = [bytes([i % 256]) * (i % 7) for i in range(5000)]

    def produce():
        for item in items:
            channel.put(item)
        channel.close()

    producer = Running(produce)
    assert list(channel) == items
    producer.finish()


def test_put_waits_while_full_and_goes_on_when_an_item_is_taken():
    channel = Channel(2)
    channel.put(1)
    channel.put(2)
    third = Running(lambda: channel.put(3))
    blocked(channel._writable)
    assert len(channel) == 2
    assert next(iter(channel)) == 1
    third.finish()
    channel.close()
    assert list(channel) == [2, 3]


def test_close_wakes_a_consumer_waiting_on_an_empty_channel():
    channel = Channel(2)
    consumer = Running(lambda: list(channel))
    blocked(channel._readable)
    channel.close()
    assert consumer.finish() == []


def test_fail_comes_after_the_queued_items_and_again_at_every_later_attempt():
    channel = Channel(4)
    channel.put(b"x")
    channel.fail(ValueError("source broke"))
    taken = []
    with pytest.raises(ValueError, match="source broke"):
        for item in channel:
            taken.append(item)
    assert taken == [b"x"]
    with pytest.raises(ValueError, match="source broke"):
        list(channel)


def test_fail_wakes_a_consumer_waiting_on_an_empty_channel():
    channel = Channel(1)
    consumer = Running(lambda: list(channel))
    blocked(channel._readable)
    channel.fail(OSError("connection reset"))
    with pytest.raises(OSError, match="connection reset"):
        consumer.finish()


def test_put_after_close_raises_and_close_wakes_a_waiting_put():
    channel = Channel(1)
    channel.put(b"queued")
    waiting = Running(lambda: channel.put(b"more"))
    blocked(channel._writable)
    channel.close()
    with pytest.raises(Closed):
        waiting.finish()
    with pytest.raises(Closed):
        channel.put(b"late")
    assert list(channel) == [b"queued"]  # what was put before the close still comes out


def test_stop_wakes_a_producer_waiting_on_a_full_channel_and_drops_the_queued_items():
    channel = Channel(2)
    channel.put(1)
    channel.put(2)
    waiting = Running(lambda: channel.put(3))
    blocked(channel._writable)
    channel.stop()
    with pytest.raises(Stopped):
        waiting.finish()
    assert len(channel) == 0
    with pytest.raises(Stopped):
        channel.put(4)
    with pytest.raises(Stopped):
        list(channel)


def test_stop_with_an_error_hands_that_error_to_the_producer():
    channel = Channel(1)
    channel.put(b"a")
    waiting = Running(lambda: channel.put(b"b"))
    blocked(channel._writable)
    error = ValueError("malformed tar header")
    channel.stop(error)
    with pytest.raises(ValueError) as raised:
        waiting.finish()
    assert raised.value is error
    with pytest.raises(ValueError):
        channel.put(b"c")


def test_stop_wakes_every_waiting_producer():
    channel = Channel(1)
    channel.put(0)
    waiting = [Running(lambda n=n: channel.put(n)) for n in range(1, 4)]
    blocked(channel._writable, waiters=3)
    channel.stop()
    for one in waiting:
        with pytest.raises(Stopped):
            one.finish()


def test_a_signal_interrupts_a_put_waiting_in_the_main_thread():
    # How Ctrl-C reaches a backup running in the main thread: the handler raises Cancelled there,
    # also while it waits for room in a channel (the wait has no polling timeout to fall back on).
    channel = Channel(1)
    channel.put(b"full")

    def send_signal():
        blocked(channel._writable)
        os.kill(os.getpid(), signal.SIGUSR1)
        if not interrupted.wait(DEADLINE):
            channel.stop()  # so that a put the signal did not interrupt ends (Stopped) and the test fails

    def on_signal(signum, frame):
        raise Cancelled("SIGINT")

    interrupted = threading.Event()
    previous = signal.signal(signal.SIGUSR1, on_signal)
    sender = Running(send_signal)
    try:
        with pytest.raises(Cancelled):
            try:
                channel.put(b"more")
            finally:
                interrupted.set()
    finally:
        sender.finish()
        signal.signal(signal.SIGUSR1, previous)
    assert list(channel.ready()) == [b"full"]  # the channel is intact: the lock was released


def test_the_first_end_wins_and_ends_after_a_stop_do_nothing():
    closed = Channel(1)
    closed.close()
    closed.fail(RuntimeError("too late"))
    assert list(closed) == []

    failed = Channel(1)
    failed.fail(RuntimeError("first"))
    failed.close()
    with pytest.raises(RuntimeError, match="first"):
        list(failed)

    stopped = Channel(1)
    stopped.stop(ValueError("consumer error"))
    stopped.close()
    stopped.fail(RuntimeError("producer error"))
    stopped.stop()
    with pytest.raises(ValueError, match="consumer error"):
        stopped.put(b"x")


def test_ready_takes_only_what_is_queued_now():
    channel = Channel(None)
    assert list(channel.ready()) == []  # returns at once on an empty channel
    channel.put(1)
    channel.put(2)
    assert list(channel.ready()) == [1, 2]
    channel.put(3)
    channel.fail(ValueError("worker failed"))
    taken = []
    with pytest.raises(ValueError, match="worker failed"):
        for item in channel.ready():
            taken.append(item)
    assert taken == [3]


def test_an_unbounded_channel_never_makes_put_wait():
    channel = Channel(None)
    for n in range(10_000):
        channel.put(n)
    assert len(channel) == 10_000


def test_a_depth_below_one_is_refused():
    with pytest.raises(ValueError):
        Channel(0)


def test_reader_reads_across_item_boundaries_to_the_end():
    channel = Channel(8)
    for piece in (b"hello ", b"", b"wor", b"ld"):
        channel.put(piece)
    channel.close()
    reader = ChannelReader(channel)
    assert reader.read(4) == b"hell"
    assert reader.read(100) == b"o "  # at most one item per read
    assert reader.read() == b"world"
    assert reader.read(10) == b""


def test_reader_raises_the_producers_failure_after_the_data_before_it():
    channel = Channel(8)
    channel.put(b"abc")
    channel.fail(OSError("cut short"))
    reader = ChannelReader(channel)
    assert reader.read(10) == b"abc"
    with pytest.raises(OSError, match="cut short"):
        reader.read(10)
    with pytest.raises(OSError, match="cut short"):
        reader.read(10)


def test_closing_the_reader_wakes_a_producer_waiting_on_a_full_channel():
    channel = Channel(1)
    reader = ChannelReader(channel)
    channel.put(b"a")
    waiting = Running(lambda: channel.put(b"b"))
    blocked(channel._writable)
    reader.close()
    with pytest.raises(Stopped):
        waiting.finish()


def test_writer_puts_a_copy_of_each_write_and_raises_once_the_consumer_stopped():
    channel = Channel(4)
    writer = ChannelWriter(channel)
    data = bytearray(b"first")
    assert writer.write(memoryview(data)) == 5
    data[:] = b"XXXXX"  # pyrage reuses its buffer after a write returns
    channel.close()
    assert list(channel) == [b"first"]

    stopped = Channel(4)
    stopped.stop()
    with pytest.raises(Stopped):
        ChannelWriter(stopped).write(b"late")


def test_reader_and_writer_carry_a_stream_between_threads():
    channel = Channel(2)
    data = bytes(range(256)) * 4096  # 1 MiB

    def write():
        writer = ChannelWriter(channel)
        for start in range(0, len(data), 65536):
            writer.write(data[start : start + 65536])
        channel.close()

    producer = Running(write)
    assert ChannelReader(channel).read() == data
    producer.finish()
