"""The archive format: a tar stream compressed as one zstd frame, checked as it flows.

Both directions are generators over chunks, so memory stays bounded whatever the volume's size:
``compress_tar`` turns tar chunks into stored chunks, ``verified_tar`` turns a stored archive back
into tar chunks and raises IntegrityError unless it matches its manifest exactly.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator

import zstandard

from backup.streams.background import BackgroundConsumer
from backup.errors import IntegrityError
from backup.archive.tar.scanner import DIGEST_PREFIX, TarScanner

if TYPE_CHECKING:
    from backup.archive.manifest import Manifest

DEFAULT_LEVEL = 3
READ_SIZE = 1 << 20
# zstd's work unit per worker thread. Compressing a cached 2 GB tar of the 10 GB set's data (40 %
# random, 40 % logs, 20 % JSON) with 2 workers, quiet machine, medians of 3: 1 MiB jobs 8.12 s,
# 48 MB peak RSS, 1036.2 MB out; 4 MiB 7.06 s, 79 MB, 1027.8 MB; 8 MiB 6.96 s, 107 MB; host
# `zstd -T0 -3` 6.55 s, 107 MB, 1026.8 MB. With 1 MiB jobs the workers wait on each other (the CPU
# used was the same); 4 MiB gets most of the speed and size back at +31 MB, which keeps a whole
# backup's peak under the 150 MB budget (README, Benchmarks) where 8 MiB would not.
JOB_SIZE = 4 << 20
# When several volumes are compressed at once (``backup --concurrency``) their streams keep the
# cores busy already, and 4 MiB jobs would only multiply memory: 4 volumes of 55 MB at once peaked
# at 243 MB with 4 MiB jobs against 150-163 MB with 1 MiB (one at a time: 126-133 MB against 94 MB).
PARALLEL_JOB_SIZE = 1 << 20
Progress = Callable[[int], None]


def _no_progress(_n: int) -> None:
    pass


def default_threads() -> int:
    """Return the number of zstd worker threads to use by default: one per CPU."""
    return os.cpu_count() or 1


@dataclass
class ArchiveStats:
    """What a pass over an archive measured. Filled in while the stream flows."""

    tar_size: int = 0
    stored_size: int = 0
    entries: int = 0
    sha256: str = ""
    content_digest: str = ""  # digest of the tar entries' metadata and data (TarScanner)


def coalesce(chunks: Iterable[bytes], size: int = READ_SIZE) -> Iterator[bytes]:
    """Yield ``chunks`` joined into pieces of at least ``size`` bytes (the last may be smaller).

    Docker's archive stream arrives in 32 KiB HTTP chunks; handling 1 MiB at a time cuts the
    per-chunk Python work in the scanner, hashing and compressor calls by thirty times.
    """
    pending: list[bytes] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending.clear()
            held = 0
    if pending:
        yield b"".join(pending)


def compress_tar(
    tar_chunks: Iterable[bytes],
    stats: ArchiveStats,
    *,
    level: int = DEFAULT_LEVEL,
    threads: int | None = None,
    progress: Progress = _no_progress,
    scanner: TarScanner | None = None,
    job_size: int = JOB_SIZE,
) -> Iterator[bytes]:
    """Yield the zstd-compressed form of ``tar_chunks``; fill ``stats`` once exhausted.

    ``progress`` is called with the number of tar bytes consumed. A ``scanner`` given (a fresh
    TarScanner) is the one used, so that the caller can read its ``entries`` as they are counted.
    Raises IntegrityError if the tar stream is malformed or cut short, so a broken read never
    becomes a stored backup.
    """
    scanner = scanner if scanner is not None else TarScanner()
    digest = hashlib.sha256()
    stored = 0
    # write_checksum adds zstd's frame checksum, so a plain `zstd -d` also detects corruption.
    # Small jobs and a chunker bound memory: with the default job size a multi-threaded compressobj
    # hands back 40-70 MB at once, and the fan-out queues would hold several of those.
    # zstd's thread count and job size change speed and memory, never the tar that decompresses
    # (no mutation of them can be observed: pragma: no mutate).
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        threads=threads if threads is not None else default_threads(),  # pragma: no mutate
        job_size=job_size,  # pragma: no mutate
        write_checksum=True,
    )
    chunker = zstandard.ZstdCompressor(compression_params=params).chunker(chunk_size=READ_SIZE)
    # The scan (content digest) and the stored-bytes hash run beside zstd, not between its calls.
    # The worker threads' names (pragma: no mutate) are seen only in debuggers, never in behaviour.
    with (
        BackgroundConsumer(
            scanner.feed,
            "tar-scan",  # pragma: no mutate
        ) as scan,
        BackgroundConsumer(
            digest.update,
            "sha256",  # pragma: no mutate
        ) as hasher,
    ):
        for chunk in coalesce(tar_chunks):
            scan.feed(chunk)
            progress(len(chunk))
            for out in chunker.compress(chunk):
                hasher.feed(out)
                stored += len(out)
                yield out
        # A short or malformed tar must fail before zstd's frame is closed, not after.
        scan.wait()
        scanner.finish()
        for out in chunker.finish():
            hasher.feed(out)
            stored += len(out)
            yield out
        hasher.wait()
    stats.tar_size, stats.entries, stats.content_digest = scanner.tar_size, scanner.entries, scanner.content_digest
    stats.stored_size, stats.sha256 = stored, digest.hexdigest()


def checked_backup_tar(
    stored: BinaryIO,
    manifest: Manifest,
    *,
    decrypt: Callable[[BinaryIO], BinaryIO] | None,
    metadata_sink: BinaryIO | None = None,
    progress: Progress = _no_progress,
    canonical: bool = True,
) -> Iterator[bytes]:
    """Return ``verified_tar`` of a stored backup, checked against everything its manifest records
    (its tar size included: decompression stops as soon as the tar grows past it).

    Hostile entries are refused. With ``canonical`` (what an extractor must be given), the chunks
    are the stream re-emitted from the entries the checks read (``TarScanner``), not the stored tar:
    a header that tar readers could read differently never reaches the extractor. Without it (a
    check only), the stored tar as it is. Raises as ``verified_tar`` does.
    """
    return verified_tar(
        stored,
        expected_sha256=manifest.sha256,
        expected_size=manifest.stored_size,
        expected_entries=manifest.entries,
        expected_content_digest=manifest.content_digest,
        expected_tar_size=manifest.tar_size,
        metadata_sink=metadata_sink,
        refuse_hostile=True,
        canonical=canonical,
        decrypt=decrypt,
        progress=progress,
    )


class _HashingReader:
    """Wraps a binary stream, hashing (in ``hasher``'s thread) and counting every byte read through it.

    Reads are handed to the hasher in pieces of at least READ_SIZE: pyrage reads 8 KiB at a time,
    and a thread hand-off per 8 KiB costs more than hashing them.
    """

    def __init__(self, raw: BinaryIO, hasher: BackgroundConsumer, progress: Progress):
        self.raw = raw
        self.hasher = hasher
        self.size = 0
        self.progress = progress
        self._pending: list[bytes] = []
        self._pending_size = 0

    # pragma: no mutate below: how much is read and handed over at once changes speed and memory,
    # never which bytes are hashed, counted or returned. (The copy of a non-bytes read is not
    # marked: without it a reused buffer would be hashed after it changed; a test catches that.)
    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)  # pragma: no mutate
        if type(data) is not bytes:  # the hashing thread needs bytes that nobody changes
            data = bytes(data)
        self.size += len(data)
        self.progress(len(data))
        self._pending.append(data)
        self._pending_size += len(data)  # pragma: no mutate
        if self._pending_size >= READ_SIZE:  # pragma: no mutate
            self._hand_over()
        return data

    def _hand_over(self) -> None:
        if self._pending_size:
            self.hasher.feed(b"".join(self._pending))
        self._pending.clear()
        self._pending_size = 0

    def drain(self) -> None:
        """Read to the end of the stream and hand every byte read to the hasher."""
        while self.read(READ_SIZE):  # pragma: no mutate  (read(None) reads the rest at once: memory only)
            pass
        self._hand_over()


def verified_tar(
    stored: BinaryIO,
    *,
    expected_sha256: str,
    expected_size: int,
    expected_entries: int | None,
    expected_content_digest: str | None = None,
    expected_tar_size: int | None = None,
    metadata_sink: BinaryIO | None = None,
    refuse_hostile: bool = False,
    canonical: bool = False,
    decrypt: Callable[[BinaryIO], BinaryIO] | None = None,
    progress: Progress = _no_progress,
) -> Iterator[bytes]:
    """Yield the tar stream inside a stored archive, checking it against its manifest on the way.

    The last chunk is yielded only after every check has passed; on any mismatch IntegrityError is
    raised instead, so a consumer that stops at an exception never commits a bad archive. With
    ``refuse_hostile`` an entry that would escape the target raises HostileArchiveError before the
    chunk that holds it is yielded. With ``expected_tar_size``, IntegrityError is raised as soon as
    the decompressed tar grows past it (before the chunk that does is scanned or yielded: a zstd
    bomb stops there), and at the end if it is shorter. With ``canonical``, the chunks yielded are
    the scanner's re-emission of the entries it checked (``TarScanner(canonical=True)``), not the
    decompressed bytes. ``decrypt``, for an encrypted archive, turns the stored stream into a
    readable plaintext stream (closed here); the sha256 covers the stored bytes as they are.
    ``progress`` is called with the number of stored bytes read.
    """
    digest = hashlib.sha256()
    scanner = TarScanner(metadata_sink, refuse_hostile=refuse_hostile, canonical=canonical)
    # What goes to the consumer, one item per chunk fed, in order. The newest is held back until the
    # scanner has passed it, and the last one until the whole archive has checked out.
    ready: deque = deque()
    consume = (lambda chunk: ready.append(scanner.feed(chunk))) if canonical else scanner.feed
    fed = given = tar_size = 0
    # Hashing the stored bytes and scanning the tar run beside zstd, each in its own thread.
    with (
        BackgroundConsumer(
            digest.update,
            "sha256",  # pragma: no mutate  (a thread's name, as in compress_tar)
        ) as hasher,
        BackgroundConsumer(
            consume,
            "tar-scan",  # pragma: no mutate
        ) as scan,
    ):
        reader = _HashingReader(stored, hasher, progress)
        plain = decrypt(reader) if decrypt is not None else reader  # type: ignore[arg-type]  # _HashingReader: read() is all they use
        # The read size is speed and memory only; read_across_frames is also left unmutated: the read
        # loop below goes on after a frame ends whether a single read crosses frames or not.
        decompressor = zstandard.ZstdDecompressor().stream_reader(
            plain,  # type: ignore[arg-type]  # as above
            read_size=READ_SIZE,  # pragma: no mutate
            read_across_frames=True,  # pragma: no mutate
        )
        try:
            while True:
                chunk = decompressor.read(READ_SIZE)
                if not chunk:
                    break
                tar_size += len(chunk)
                if expected_tar_size is not None and tar_size > expected_tar_size:
                    raise IntegrityError(
                        f"archive decompresses to more than the {expected_tar_size} bytes of tar its manifest "
                        "records: refused (stopped there, nothing past them was extracted)"
                    )
                scan.feed(chunk)
                fed += 1
                if not canonical:
                    ready.append(chunk)
                # Everything but the newest chunk has been scanned: what it gave passed the entry checks.
                scan.wait(behind=1)
                while given < fed - 1:
                    out = ready.popleft()
                    given += 1
                    if out:
                        yield out
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"archive is corrupt: zstd cannot decompress it ({exc})") from None
        finally:
            if plain is not reader:
                plain.close()  # type: ignore[union-attr]  # not the reader: decrypt's stream
        reader.drain()  # hash every stored byte, including any after the zstd frame
        hasher.wait()
        scan.wait()
    if reader.size != expected_size:
        raise IntegrityError(f"archive is {reader.size} bytes, but its manifest says {expected_size}")
    if digest.hexdigest() != expected_sha256:
        raise IntegrityError("archive checksum does not match its manifest (sha256 mismatch)")
    if expected_tar_size is not None and tar_size != expected_tar_size:
        raise IntegrityError(f"archive holds a tar of {tar_size} bytes, but its manifest says {expected_tar_size}")
    tail = scanner.finish()
    if expected_entries is not None and scanner.entries != expected_entries:
        raise IntegrityError(f"archive holds {scanner.entries} entries, but its manifest says {expected_entries}")
    if expected_content_digest and expected_content_digest.startswith(DIGEST_PREFIX):
        if scanner.content_digest != expected_content_digest:
            raise IntegrityError("archive content digest does not match its manifest (entries or data differ)")
    last = b"".join([*ready, tail])
    if last:
        yield last


def tree_digest(tar_chunks: Iterable[bytes]) -> tuple[str, int]:
    """Return the content digest and entry count of a tar stream (e.g. a restored volume's).

    Raises IntegrityError if the stream is not a complete tar.
    """
    scanner = TarScanner()
    for chunk in tar_chunks:
        scanner.feed(chunk)
    scanner.finish()
    return scanner.content_digest, scanner.entries


def encrypted_stored(stored_chunks: Iterable[bytes], recipients, stats: ArchiveStats) -> Iterator[bytes]:
    """Yield the age encryption of ``stored_chunks`` (from ``compress_tar``) for ``recipients`` (a
    ``backup.crypto.encryption.Recipients``, or a ``Passphrase``).

    Once exhausted, ``stats.stored_size`` and ``stats.sha256`` describe the encrypted bytes, which
    are what is stored (the other fields stay as ``compress_tar`` filled them in). Raises what
    ``compress_tar`` and the encryption raise.
    """
    from backup.crypto.encryption import encrypt_chunks  # pyrage is loaded only when encrypting

    digest = hashlib.sha256()
    size = 0
    for chunk in encrypt_chunks(stored_chunks, recipients):
        digest.update(chunk)
        size += len(chunk)
        yield chunk
    stats.stored_size, stats.sha256 = size, digest.hexdigest()
