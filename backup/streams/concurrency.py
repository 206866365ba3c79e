"""Run independent pieces of work (one volume's backup each) a few at a time, cancellably.

Signals reach only the main thread: there ``Cancelled`` is raised while it waits for the workers.
The workers learn of it through ``raise_if_cancelled``, which the data paths call between chunks,
so each one unwinds through its own clean-up (helper removed, partial upload aborted) before
``Cancelled`` propagates from ``run_concurrently``.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from backup.errors import Cancelled

T = TypeVar("T")
R = TypeVar("R")

_cancelled = threading.Event()
_reason = ["SIGINT"]


def raise_if_cancelled() -> None:
    """Return at once, or raise Cancelled if the run this thread works for was cancelled."""
    if _cancelled.is_set():
        raise Cancelled(_reason[0])


def cancellable(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield ``chunks``, raising Cancelled before the next one once the run was cancelled."""
    for chunk in chunks:
        raise_if_cancelled()
        yield chunk


def run_concurrently(
    items: Sequence[T], work: Callable[[T], R], limit: int, on_done: Callable[[R], None] | None = None
) -> list[R]:
    """Return ``[work(item) for item in items]``, running up to ``limit`` at once.

    ``on_done`` is called in the calling thread with each result as it is known. ``work`` should
    report failures in its result; an exception it raises propagates once every other piece has
    finished. With ``limit`` 1 (or a single item) everything runs in the calling thread. Cancelled
    raised in the calling thread (a signal) is passed on to the workers, waited for, and re-raised.
    """
    _cancelled.clear()
    if limit <= 1 or len(items) <= 1:
        results: list[R] = []
        for item in items:
            results.append(work(item))
            if on_done is not None:
                on_done(results[-1])
        return results
    results: dict[int, R] = {}  # type: ignore[no-redef]  # the other branch returned above
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="volsafe-work") as pool:
        pending: dict[Future, int] = {pool.submit(work, item): index for index, item in enumerate(items)}

        def collect(done) -> None:
            for future in done:
                index = pending.pop(future)
                if future.cancelled() or future.exception() is not None:
                    continue
                results[index] = future.result()
                if on_done is not None:
                    on_done(results[index])

        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # a piece that raised: stop the rest (below), then raise
                collect(done)
        except BaseException as exc:
            if isinstance(exc, Cancelled):
                _reason[0] = exc.signal_name
            _cancelled.set()
            for future in pending:
                future.cancel()  # not started yet: never starts
            done, _ = wait(pending)  # the started ones unwind through their clean-up
            # Pieces that finished meanwhile (past their last check) are reported, not lost.
            collect(done)
            raise
        finally:
            if all(future.done() for future in pending):
                _cancelled.clear()  # else (a second signal) the workers still need to see it
    return [results[index] for index in range(len(items))]
