"""Test helper: send this process a signal after a delay, safely on every path.

A bare ``threading.Timer(…, os.kill, …)`` outlives the test that started it: if the code under test
returns early (or raises), the timer still fires later, when the test's handler is gone, and the
signal's default action kills the whole pytest run. ``signal_after`` disarms and joins its timer
when the block ends, so no signal is ever sent after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from typing import Iterator


@dataclass
class Sent:
    """What happened to the signal: ``sent`` once it was, ``stray`` if no handler of the code under
    test took it (only with ``catch_strays``)."""

    sent: bool = False
    stray: bool = False


@contextlib.contextmanager
def signal_after(seconds: float, signum: int = signal.SIGTERM, *, catch_strays: bool = False) -> Iterator[Sent]:
    """Send ``signum`` to this process ``seconds`` into the block, unless the block has ended.

    With ``catch_strays`` a handler that only records the signal (``Sent.stray``) is installed for
    the block: code under test that installs its own handlers and restores the previous ones on
    return leaves that one, so a signal that comes too late is reported instead of killing pytest.
    """
    lock = threading.Lock()  # held while the signal is sent; taken to disarm
    armed = [True]
    result = Sent()

    def send() -> None:
        with lock:
            if armed[0]:
                result.sent = True
                os.kill(os.getpid(), signum)

    def stray(_signum, _frame) -> None:
        result.stray = True

    previous = signal.signal(signum, stray) if catch_strays else None
    timer = threading.Timer(seconds, send)
    timer.start()
    try:
        yield result
    finally:
        with lock:
            armed[0] = False
        timer.cancel()
        timer.join()
        if catch_strays:
            signal.signal(signum, previous)
