"""Make one archive of a local store stall mid-read, in a volsafe process the tests start.

A local store refuses a FIFO in place of an archive (a planted special file must not hang volsafe),
so a test that must interrupt a restore mid-extraction stalls the read from inside instead: the
process imports this module first (``VOLSAFE_TEST_PRELOAD``), and ``LocalBackend.open`` of the key
named in ``VOLSAFE_TEST_STALL`` returns a reader that hands out ``stall_at`` bytes, writes
``DIR/stalled``, and waits until ``DIR/release`` exists (at most 120 s) before it reads on.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from storage_backends.local import LocalBackend


class _StallingReader(io.RawIOBase):
    def __init__(self, inner, stall_at: int, markers: Path):
        self.inner, self.left, self.markers = inner, stall_at, markers
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left == 0:
            (self.markers / "stalled").write_text(str(self.served))  # how much was handed out
            deadline = time.monotonic() + 120
            while not (self.markers / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.left = -1
        want = len(buffer) if self.left < 0 else min(len(buffer), self.left)
        data = self.inner.read(want)
        buffer[: len(data)] = data
        self.served += len(data)
        if self.left > 0:
            self.left -= len(data)
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


def _install() -> None:
    spec = json.loads(os.environ["VOLSAFE_TEST_STALL"])
    original = LocalBackend.open

    def open_(self, key: str, offset: int = 0):
        stream = original(self, key, offset)
        if key != spec["key"]:
            return stream
        return io.BufferedReader(_StallingReader(stream, spec["stall_at"], Path(spec["dir"])), 1 << 20)

    LocalBackend.open = open_  # type: ignore[method-assign]


if os.environ.get("VOLSAFE_TEST_STALL"):
    _install()
