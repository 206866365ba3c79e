"""run_concurrently: order, limit, results as they finish, failures and cancellation by signal."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from backup.streams.concurrency import cancellable, raise_if_cancelled, run_concurrently
from backup.errors import Cancelled
from tests.support.signals import signal_after


class Gauge:
    """Counts the pieces of work running at once, and the most seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("limit", [1, 2, 3, 8])
def test_results_keep_the_input_order_and_the_limit_holds(limit):
    gauge = Gauge()
    items = list(range(8))
    full = threading.Event()

    def work(n):
        with gauge:
            if gauge.most >= min(limit, len(items)):
                full.set()
            full.wait(10)  # the first pieces wait until `limit` of them run at once (or 10 s pass)
            time.sleep(0.01 * (8 - n))  # later items finish first
            return n * n

    done = []
    assert run_concurrently(items, work, limit, done.append) == [n * n for n in items]
    assert sorted(done) == [n * n for n in items]
    assert gauge.most == min(limit, len(items))


def test_one_at_a_time_runs_in_the_calling_thread():
    threads = []
    run_concurrently([1, 2, 3], lambda n: threads.append(threading.current_thread()), 1)
    assert threads == [threading.main_thread()] * 3


def test_a_failing_piece_lets_the_others_finish_then_raises():
    finished = []

    def work(n):
        if n == 0:
            raise ValueError("boom")
        time.sleep(0.05)
        finished.append(n)
        return n

    with pytest.raises(ValueError, match="boom"):
        run_concurrently([0, 1, 2], work, 3)
    assert sorted(finished) == [1, 2]


def test_a_signal_cancels_the_workers_which_clean_up_before_cancelled_propagates():
    cleaned = []
    started = threading.Barrier(2, timeout=10)

    def work(n):
        try:
            started.wait()
            for _ in cancellable(iter(lambda: b"x", None)):  # an endless stream
                time.sleep(0.01)
        finally:
            cleaned.append(n)

    def on_signal(signum, frame):
        raise Cancelled("SIGTERM")

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        with signal_after(0.3, signal.SIGUSR1), pytest.raises(Cancelled) as raised:
            run_concurrently([1, 2, 3, 4], work, 2)
    finally:
        signal.signal(signal.SIGUSR1, previous)  # the timer is disarmed and joined by now
    assert raised.value.signal_name == "SIGTERM"
    # the two that had started unwound; the two that had not were never started
    assert sorted(cleaned) == [1, 2]
    assert run_concurrently([1, 2], lambda n: raise_if_cancelled() or n, 2) == [1, 2]  # the next run starts clean


def test_pieces_that_finish_while_a_cancel_unwinds_are_still_reported():
    release = threading.Event()

    def work(n):
        if n == 1:
            release.wait(10)  # past its last cancellation check: it finishes normally
            return "stored"
        for _ in cancellable(iter(lambda: b"x", None)):
            time.sleep(0.01)

    def on_signal(signum, frame):
        release.set()
        raise Cancelled("SIGINT")

    done = []
    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        with signal_after(0.3, signal.SIGUSR1), pytest.raises(Cancelled):
            run_concurrently([1, 2], work, 2, done.append)
    finally:
        signal.signal(signal.SIGUSR1, previous)  # the timer is disarmed and joined by now
    assert done == ["stored"]
    raise_if_cancelled()  # cleared once every worker has finished
