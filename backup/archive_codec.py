"""The archive format: a tar stream compressed as one zstd frame, checked as it flows.

Both directions are generators over chunks, so memory stays bounded whatever the volume's size:
``compress_tar`` turns tar chunks into stored chunks, ``verified_tar`` turns a stored archive back
into tar chunks and raises IntegrityError unless it matches its manifest exactly.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator

import zstandard

from backup.errors import IntegrityError
from backup.tarstream import TarScanner

DEFAULT_LEVEL = 3
READ_SIZE = 1 << 20
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
) -> Iterator[bytes]:
    """Yield the zstd-compressed form of ``tar_chunks``; fill ``stats`` once exhausted.

    ``progress`` is called with the number of tar bytes consumed. Raises IntegrityError if the tar
    stream is malformed or cut short, so a broken read never becomes a stored backup.
    """
    scanner = TarScanner()
    digest = hashlib.sha256()
    stored = 0
    # write_checksum adds zstd's frame checksum, so a plain `zstd -d` also detects corruption.
    compressor = zstandard.ZstdCompressor(
        level=level, threads=threads if threads is not None else default_threads(), write_checksum=True
    ).compressobj()
    for chunk in coalesce(tar_chunks):
        scanner.feed(chunk)
        progress(len(chunk))
        out = compressor.compress(chunk)
        if out:
            digest.update(out)
            stored += len(out)
            yield out
    scanner.finish()
    out = compressor.flush()
    digest.update(out)
    stored += len(out)
    stats.tar_size, stats.entries = scanner.tar_size, scanner.entries
    stats.stored_size, stats.sha256 = stored, digest.hexdigest()
    yield out


class _HashingReader:
    """Wraps a binary stream, hashing and counting every byte that is read through it."""

    def __init__(self, raw: BinaryIO, progress: Progress):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        self.progress(len(data))
        return data

    def drain(self) -> None:
        while self.read(READ_SIZE):
            pass


def verified_tar(
    stored: BinaryIO,
    *,
    expected_sha256: str,
    expected_size: int,
    expected_entries: int | None,
    metadata_sink: BinaryIO | None = None,
    progress: Progress = _no_progress,
) -> Iterator[bytes]:
    """Yield the tar stream inside a stored archive, checking it against its manifest on the way.

    The last chunk is yielded only after every check has passed; on any mismatch IntegrityError is
    raised instead, so a consumer that stops at an exception never commits a bad archive.
    ``progress`` is called with the number of stored bytes read.
    """
    reader = _HashingReader(stored, progress)
    scanner = TarScanner(metadata_sink)
    decompressor = zstandard.ZstdDecompressor().stream_reader(reader, read_size=READ_SIZE, read_across_frames=True)
    held: bytes | None = None  # one chunk is held back until the whole archive has checked out
    try:
        while True:
            chunk = decompressor.read(READ_SIZE)
            if not chunk:
                break
            scanner.feed(chunk)
            if held is not None:
                yield held
            held = chunk
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"archive is corrupt: zstd cannot decompress it ({exc})") from None
    reader.drain()  # hash every stored byte, including any after the zstd frame
    if reader.size != expected_size:
        raise IntegrityError(f"archive is {reader.size} bytes, but its manifest says {expected_size}")
    if reader.digest.hexdigest() != expected_sha256:
        raise IntegrityError("archive checksum does not match its manifest (sha256 mismatch)")
    scanner.finish()
    if expected_entries is not None and scanner.entries != expected_entries:
        raise IntegrityError(f"archive holds {scanner.entries} entries, but its manifest says {expected_entries}")
    if held is not None:
        yield held
