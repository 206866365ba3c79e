"""Progress bars on stderr for long transfers: bytes, rate, and (once a total is known) percentage,
time left and entries; silent when not wanted."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from rich.progress import Progress

Advance = Callable[[int], None]


class Task:
    """What ``Reporter.task`` yields: call it with each number of bytes done (and, if known, the
    entries done so far). This one shows nothing."""

    def __call__(self, n: int, entries: int | None = None) -> None:
        pass

    def set_total(self, size: int, entries: int | None = None) -> None:
        """Give the task its total (bytes, and entries if known), e.g. once a size scan is done.
        May be called from another thread."""


class Reporter:
    """Makes progress tasks. The base class shows nothing (for --json, pipes and tests)."""

    #: Whether a total is worth working out (a size scan costs a helper container): only when shown.
    wants_totals = False

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        """Yield a Task to call with each number of bytes done."""
        yield Task()


class _RichTask(Task):
    def __init__(self, bar, task_id) -> None:
        self.bar, self.task_id = bar, task_id
        self._lock = threading.Lock()
        self._done = 0
        self._total: int | None = None

    def __call__(self, n: int, entries: int | None = None) -> None:
        with self._lock:
            self._done += n
            # A total that was an estimate never shows more than 100%: it grows with what was done.
            grown = {"total": self._done} if self._total is not None and self._done > self._total else {}
            if grown:
                self._total = self._done
        fields = {"entries": entries} if entries is not None else {}
        self.bar.update(self.task_id, advance=n, **grown, **fields)

    def set_total(self, size: int, entries: int | None = None) -> None:
        with self._lock:
            self._total = max(size, self._done)
            total = self._total
        self.bar.update(self.task_id, total=total, **({"entries_total": entries} if entries is not None else {}))


class RichReporter(Reporter):
    """Draws a rich progress bar on stderr for each task; tasks that run at once (volumes backed up
    concurrently) share one live display, since rich allows only one at a time."""

    wants_totals = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._active = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        with self._lock:
            if self._bar is None:
                self._bar = self._new_bar()
                self._bar.start()
            bar = self._bar
            self._active += 1
            task_id = bar.add_task(description, total=total)
        try:
            yield _RichTask(bar, task_id)
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
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        columns = [
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(), _EntriesColumn(),
            TransferSpeedColumn(), TimeElapsedColumn(), _EtaColumn(),
        ]
        return Progress(*columns, console=Console(stderr=True), transient=True)


def _entries_text(task) -> str:
    """Return "1,234/50,101 entries", "1,234 entries", or "" for a task that counts none."""
    done, total = task.fields.get("entries"), task.fields.get("entries_total")
    if done is None:
        return ""
    return f"{done:,}/{total:,} entries" if total is not None else f"{done:,} entries"


def _EntriesColumn():
    """Return a rich column showing ``_entries_text``."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EntriesColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(_entries_text(task), style="progress.download")

    return EntriesColumn()


def _EtaColumn():
    """Return a rich column showing "ETA 0:01:23" once the task has a total (nothing before)."""
    from rich.progress import TimeRemainingColumn
    from rich.text import Text

    class EtaColumn(TimeRemainingColumn):
        def render(self, task) -> Text:
            if task.total is None:
                return Text("")
            shown = super().render(task)
            return Text("ETA " + shown.plain, style=shown.style)

    return EtaColumn()


def reporter_for(quiet: bool) -> Reporter:
    """Return a drawing reporter when stderr is a terminal and output is not quiet, else a silent one."""
    if quiet or not sys.stderr.isatty():
        return Reporter()
    return RichReporter()
