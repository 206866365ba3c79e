import io
import tarfile

import pytest

from backup.archive.codec import ArchiveStats, compress_tar, verified_tar
from backup.errors import IntegrityError


def _tar_bytes(files: int = 50) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            data = (f"line {i}\n" * (i * 50)).encode()
            info = tarfile.TarInfo(f"./f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _compress(data: bytes):
    stats = ArchiveStats()
    chunks = [data[i : i + 7000] for i in range(0, len(data), 7000)]
    stored = b"".join(compress_tar(chunks, stats, level=3, threads=2))
    return stored, stats


def _restore(stored: bytes, stats: ArchiveStats, **overrides) -> bytes:
    expected = dict(expected_sha256=stats.sha256, expected_size=stats.stored_size, expected_entries=stats.entries)
    expected.update(overrides)
    return b"".join(verified_tar(io.BytesIO(stored), **expected))


def test_round_trip_and_stats():
    data = _tar_bytes()
    stored, stats = _compress(data)
    assert stats.tar_size == len(data) and stats.stored_size == len(stored) and stats.entries == 50
    assert len(stored) < len(data) / 5
    assert _restore(stored, stats) == data


def test_flipped_byte_is_refused():
    stored, stats = _compress(_tar_bytes())
    bad = bytearray(stored)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(IntegrityError):
        _restore(bytes(bad), stats)


def test_truncated_archive_is_refused():
    stored, stats = _compress(_tar_bytes())
    with pytest.raises(IntegrityError):
        _restore(stored[:-100], stats)


def test_archive_swapped_with_another_is_refused():
    stored, stats = _compress(_tar_bytes())
    other, _ = _compress(_tar_bytes(10))
    with pytest.raises(IntegrityError, match="bytes, but its manifest|checksum"):
        _restore(other, stats)


def test_wrong_entry_count_is_refused():
    stored, stats = _compress(_tar_bytes())
    with pytest.raises(IntegrityError, match="entries"):
        _restore(stored, stats, expected_entries=49)


def test_last_chunk_is_held_until_verified():
    data = _tar_bytes(400)
    stored, stats = _compress(data)
    received = bytearray()
    with pytest.raises(IntegrityError):
        for chunk in verified_tar(io.BytesIO(stored), expected_sha256="0" * 64, expected_size=stats.stored_size, expected_entries=None):
            received += chunk
    assert len(received) < len(data)  # the consumer never saw the complete stream


def test_compress_refuses_a_cut_short_tar():
    data = _tar_bytes()
    with pytest.raises(IntegrityError, match="truncated"):
        b"".join(compress_tar([data[: len(data) // 2]], ArchiveStats()))


def test_cut_short_tar_fails_before_the_zstd_frame_is_closed():
    # A consumer that kept what came out before the error must not hold a well-formed archive.
    import zstandard

    data = _tar_bytes(200)
    out = []
    with pytest.raises(IntegrityError):
        for chunk in compress_tar([data[: len(data) // 2]], ArchiveStats(), threads=2):
            out.append(chunk)
    partial = zstandard.ZstdDecompressor().decompressobj()
    partial.decompress(b"".join(out))
    assert not partial.eof


def test_hostile_entry_is_refused_before_its_chunk_is_yielded_even_with_a_slow_scanner(monkeypatch):
    # The scan runs in its own thread; make it lag far behind zstd so that a missing wait would show.
    import time

    import backup.archive.codec as codec
    from backup.archive.tar.scanner import HostileArchiveError, TarScanner

    big = bytes(range(256)) * (4 * 4096 + 7)  # about 4 MiB: several chunks before the bad entry
    data = _tar_with([("./big", big), ("./../escape", b"x"), ("./after", big)])
    bad_header_at = data.index(b"./../escape")
    stored, stats = _compress(data)

    class SlowScanner(TarScanner):
        def feed(self, chunk):
            time.sleep(0.05)
            super().feed(chunk)

    monkeypatch.setattr(codec, "TarScanner", SlowScanner)
    yielded = 0
    with pytest.raises(HostileArchiveError):
        for chunk in verified_tar(io.BytesIO(stored), expected_sha256=stats.sha256, expected_size=stats.stored_size,
                                  expected_entries=stats.entries, refuse_hostile=True):
            yielded += len(chunk)
    assert 0 < yielded <= bad_header_at


def _tar_with(files) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in files:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()
