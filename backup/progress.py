"""Progress bars on stderr for long transfers: bytes and rate; silent when not wanted."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

Advance = Callable[[int], None]


class Reporter:
    """Makes progress tasks. The base class shows nothing (for --json, pipes and tests)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        """Yield a function to call with each number of bytes done."""
        yield lambda _n: None


class RichReporter(Reporter):
    """Draws a rich progress bar on stderr for each task."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
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
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task_id = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task_id, n)


def reporter_for(quiet: bool) -> Reporter:
    """Return a drawing reporter when stderr is a terminal and output is not quiet, else a silent one."""
    if quiet or not sys.stderr.isatty():
        return Reporter()
    return RichReporter()
