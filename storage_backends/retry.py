"""Retrying transient storage failures: a policy, a backend wrapper, and a resuming reader.

Where retries happen, and why only there:

* ``RetryingBackend`` retries whole operations (``stat``, ``list``, ``remove``, ``open``, and
  ``save`` when its input can be replayed) on ``TransientError``. Backends themselves never loop.
* Some work cannot be replayed from outside a backend: the parts of a streaming upload (the chunk
  iterator is consumed once) and the rest of a download that broke midway. For those the backend is
  handed the same ``RetryPolicy`` and calls ``policy.call(fn)`` per part, or wraps its stream in a
  ``ResumingReader``.
* The S3 backend turns botocore's own retries off (one attempt per request). Two retry layers would
  multiply (botocore's 3 attempts x our 5 = 15 requests and much longer waits than configured), and
  botocore's retries are invisible to callers and to tests. With one layer there is one knob, and
  every retry is logged with the backend's URL.
"""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator, TypeVar

from storage_backends.base import (
    Backend,
    BackendError,
    NotFound,
    ObjectInfo,
    TransientError,
)

log = logging.getLogger("volsafe.storage")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a ``TransientError``.

    ``attempts`` counts every try, the first included (1 means no retry). Before try n+1 the policy
    sleeps ``delay(n)``: ``base_delay * multiplier**(n-1)`` capped at ``max_delay``, of which a random
    fraction up to ``jitter`` is taken off (0 = fixed delays, 1 = "full jitter") so that parallel part
    uploads that failed together do not retry in lockstep. ``sleep`` and ``rand`` are injectable so
    tests run without waiting.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")

    def delay(self, failures: int) -> float:
        """Return the seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        capped = min(self.max_delay, self.base_delay * self.multiplier ** (failures - 1))
        return capped * (1 - self.jitter * self.rand())

    def call(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Return ``fn(*args, **kwargs)``, retrying it on TransientError.

        Raises the last TransientError once ``attempts`` tries have failed, and any other exception
        (PermanentError, NotFound, KeyboardInterrupt...) at once.
        """
        failures = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except TransientError as err:
                failures += 1
                self.backoff(err, failures)

    def backoff(self, err: TransientError, failures: int) -> None:
        """Sleep before the next try after ``failures`` consecutive failures; re-raise ``err`` if
        no tries are left."""
        if failures >= self.attempts:
            raise err
        wait = self.delay(failures)
        log.warning("%s; retrying in %.1f s (attempt %d of %d)", err, wait, failures + 1, self.attempts)
        self.sleep(wait)


#: A policy that never retries; handy for tests and for callers that retry elsewhere.
NO_RETRY = RetryPolicy(attempts=1)


class RetryingBackend(Backend):
    """Wraps another backend and retries its operations on TransientError.

    ``save`` is retried only when its input can be replayed: a bytes-like object or a list/tuple of
    chunks. A one-shot iterator is handed over once (the S3 backend still retries each part inside).
    """

    def __init__(self, inner: Backend, policy: RetryPolicy | None = None):
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self.url = inner.url

    def save(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store ``chunks`` under ``key``; return the size. Raises as ``inner.save`` does."""
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            # A bare bytes object iterates as ints, so hand the backend a one-chunk sequence.
            replayable: tuple | list | None = (memoryview(chunks).cast("B"),)
        elif isinstance(chunks, (list, tuple)):
            replayable = chunks
        else:
            replayable = None
        if replayable is None:
            return self.inner.save(key, chunks)
        return self.policy.call(self.inner.save, key, replayable)

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """Return ``inner.open(key, offset)``, retrying the opening (not later reads)."""
        return self.policy.call(self.inner.open, key, offset)

    def stat(self, key: str) -> ObjectInfo:
        """Return ``inner.stat(key)``, retried. Raises NotFound."""
        return self.policy.call(self.inner.stat, key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield ``inner.list(prefix)``; a listing that breaks midway restarts and skips what was
        already yielded, so each object is reported once."""
        seen: set[str] = set()
        failures = 0
        while True:
            try:
                for info in self.inner.list(prefix):
                    if info.key in seen:
                        continue
                    seen.add(info.key)
                    failures = 0  # progress: the budget is for consecutive failures
                    yield info
                return
            except TransientError as err:
                failures += 1
                self.policy.backoff(err, failures)

    def remove(self, key: str) -> None:
        """Delete ``key``, retried. Raises NotFound only if the object was absent from the start."""
        failed_before = False

        def attempt() -> None:
            nonlocal failed_before
            try:
                self.inner.remove(key)
            except NotFound:
                # An earlier try may have deleted it and then lost the answer: that is success.
                if failed_before:
                    log.info("%s: %s was gone on retry; an earlier attempt removed it", self.url, key)
                    return
                raise
            except TransientError:
                failed_before = True
                raise

        self.policy.call(attempt)

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"<RetryingBackend {self.inner!r}>"


def with_retries(backend: Backend, policy: RetryPolicy | None = None) -> RetryingBackend:
    """Return ``backend`` wrapped in a RetryingBackend (re-wrapped if a new ``policy`` is given)."""
    if isinstance(backend, RetryingBackend):
        if policy is None:
            return backend
        backend = backend.inner
    return RetryingBackend(backend, policy)


class ResumingReader(io.RawIOBase):
    """A read-only stream that survives broken connections by reopening where it stopped.

    ``open_at(pos)`` returns a fresh stream of the object from byte ``pos`` (raising BackendError).
    ``classify(exc)`` turns an exception raised while reading into a BackendError (TransientError:
    reopen and go on) or None (not a transport failure: re-raise as is). If ``size`` is known, an
    early end of stream also counts as a break; ``name`` starts its message, e.g.
    ``"s3://bkt/p: cannot read KEY"``. At most ``policy.attempts`` consecutive tries may fail
    at one position; any byte of progress resets the count.
    """

    def __init__(
        self,
        open_at: Callable[[int], BinaryIO],
        *,
        policy: RetryPolicy,
        classify: Callable[[BaseException], BackendError | None],
        start: int = 0,
        size: int | None = None,
        first: BinaryIO | None = None,
        name: str = "",
    ):
        super().__init__()
        self._open_at = open_at
        self._policy = policy
        self._classify = classify
        self._pos = start
        self._size = size
        self._stream = first
        self._failures = 0
        self.resumes = 0  #: how many times the stream was reopened after a break
        self.name = name

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        """Fill ``buffer`` with the next bytes; return how many (0 at the end). Raises BackendError
        when the stream cannot be resumed."""
        view = memoryview(buffer).cast("B")
        if not view or (self._size is not None and self._pos >= self._size):
            return 0
        while True:
            try:
                n = self._read_some(view)
            except BaseException as exc:  # noqa: BLE001 - classified below, never swallowed
                self._on_break(exc)
                continue
            self._pos += n
            self._failures = 0
            return n

    def readall(self) -> bytes:
        """Return everything up to the end (read in 1 MiB steps rather than RawIOBase's 8 KiB)."""
        out = bytearray()
        chunk = bytearray(1 << 20)
        while n := self.readinto(chunk):
            out += memoryview(chunk)[:n]
        return bytes(out)

    def _read_some(self, view: memoryview) -> int:
        if self._stream is None:
            self._stream = self._open_at(self._pos)
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            n = readinto(view)
        else:
            data = self._stream.read(len(view))
            n = len(data)
            view[:n] = data
        if n == 0 and self._size is not None and self._pos < self._size:
            raise TransientError(f"{self.name}: stream ended early, at byte {self._pos} of {self._size}")
        return n

    def _on_break(self, exc: BaseException) -> None:
        """Drop the broken stream and sleep before reopening; raise if the break is not transient
        or too many tries failed in a row."""
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: never resumed
        err = exc if isinstance(exc, BackendError) else self._classify(exc)
        if err is None:
            raise exc
        if not isinstance(err, TransientError):
            if err is exc:
                raise exc
            raise err from exc
        self._discard_stream()
        self._failures += 1
        try:
            self._policy.backoff(err, self._failures)
        except TransientError:
            if err is exc:
                raise
            raise err from exc
        self.resumes += 1

    def _discard_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - it is already broken; closing is best effort
                pass

    def close(self) -> None:
        self._discard_stream()
        super().close()
