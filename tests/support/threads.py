"""Threads in tests: run a call in a thread and join it with a deadline; wait until a thread blocks.

Nothing here sleeps to synchronise: a blocked thread is seen parked on its condition, and every
join has a deadline, so a hang fails one test instead of the run.
"""

from __future__ import annotations

import sys
import threading
import time

DEADLINE = 5.0


class Running:
    """``call()`` in a daemon thread; ``finish`` joins it (with a deadline) and returns or raises its outcome."""

    def __init__(self, call):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call):
        try:
            self.result = call()
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            self.error = exc

    def finish(self):
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "still blocked after the deadline"
        if self.error is not None:
            raise self.error
        return self.result


def blocked(condition: threading.Condition, waiters: int = 1) -> None:
    """Wait until ``waiters`` threads wait on ``condition`` (CPython's Condition keeps them in _waiters)."""
    end = time.monotonic() + DEADLINE
    while len(condition._waiters) < waiters:
        assert time.monotonic() < end, "the thread never blocked"
        time.sleep(0.001)


def parked_in(thread: threading.Thread, filename_end: str, function: str) -> None:
    """Wait until ``thread`` is blocked (its innermost frame is threading's ``wait``) with a call to
    ``function`` of a file whose path ends in ``filename_end`` on its stack: an observed wait, not a
    guessed one."""
    end = time.monotonic() + DEADLINE
    while True:
        frame = sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
        if frame is not None and frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
            caller = frame
            while caller is not None:
                if caller.f_code.co_name == function and caller.f_code.co_filename.endswith(filename_end):
                    return
                caller = caller.f_back
        assert time.monotonic() < end, f"the thread never blocked in {function}"
        time.sleep(0.001)
