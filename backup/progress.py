"""Progress bars on stderr for long transfers: bytes and rate; silent when not wanted."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Callable, Iterator

Advance = Callable[[int], None]


class Reporter:
    """Makes progress tasks. The base class shows nothing (for --json, pipes and tests)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        """Yield a function to call with each number of bytes done."""
        yield lambda _n: None


class RichReporter(Reporter):
    """Draws a rich progress bar on stderr for each task; tasks that run at once (volumes backed up
    concurrently) share one live display, since rich allows only one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bar = None
        self._active = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        with self._lock:
            if self._bar is None:
                self._bar = self._new_bar()
                self._bar.start()
            bar = self._bar
            self._active += 1
            task_id = bar.add_task(description, total=total)
        try:
            yield lambda n: bar.advance(task_id, n)
        finally:
            with self._lock:
                bar.remove_task(task_id)
                self._active -= 1
                if not self._active:
                    bar.stop()
                    self._bar = None

    @staticmethod
    def _new_bar():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn()]
        return Progress(*columns, console=Console(stderr=True), transient=True)


def reporter_for(quiet: bool) -> Reporter:
    """Return a drawing reporter when stderr is a terminal and output is not quiet, else a silent one."""
    if quiet or not sys.stderr.isatty():
        return Reporter()
    return RichReporter()
