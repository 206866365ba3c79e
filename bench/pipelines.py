"""In-process throughput of the chunk pipelines, without Docker or a disk: one process, one measurement.

``backup``: read-ahead -> compress_tar -> fan-out to two backends that only count (the threads
and hand-offs of a plain backup). ``encrypted``: the same with age encryption (recipients, through
pyrage) between compressing and the fan-out, then the restore direction: verified_tar decrypting
with DecryptingReader. ``handoffs``: the thread hand-offs alone, without zstd: one 1 MiB chunk
``--size-mb`` times through read-ahead, two BackgroundConsumers (sha256, sha1) and the fan-out to two
counting backends. The tar (``--size-mb``, a third each of random, hex-text and repetitive
data, in files of 4 MiB) is built in memory first and handed over in 1 MiB chunks; building it is
not timed; ``--threads`` is passed to compress_tar. Prints one JSON line. Compare two trees by
putting each first on PYTHONPATH in turn:

    for i in 1 2 3; do for tree in /tmp/old /tmp/new; do
        PYTHONPATH=$tree python3 bench/pipelines.py encrypted; done; done
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
import tarfile
import time

import backup
from backup.archive.codec import ArchiveStats, compress_tar, encrypted_stored, verified_tar
from backup.streams.background import BackgroundConsumer
from backup.streams.concurrency import cancellable
from backup.streams.fanout import save_to_all
from backup.streams.read_ahead import read_ahead

MB = 1_000_000
CHUNK = 1 << 20
FILE = 4 << 20


class CountingBackend:
    """Takes the place of a storage backend: reads every chunk, keeps them only if asked to."""

    def __init__(self, name: str, keep: bool = False):
        self.url = f"count://{name}"
        self.kept: list[bytes] | None = [] if keep else None

    def save(self, key: str, chunks) -> int:
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if self.kept is not None:
                self.kept.append(chunk)
        return size


def make_tar(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for index in range(max(1, size // FILE)):
            kind = index % 3
            if kind == 0:
                data = rng.randbytes(FILE)
            elif kind == 1:
                data = rng.randbytes(FILE // 2).hex().encode()
            else:
                data = b"".join(b"line %d of file %d\n" % (n, index) for n in range(FILE // 20))[:FILE]
            info = tarfile.TarInfo(f"./d{index % 10}/f{index}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def handoffs(count: int) -> None:
    chunk = bytes(range(256)) * (CHUNK // 256)

    def stream():
        first, second = hashlib.sha256(), hashlib.sha1()
        with BackgroundConsumer(first.update, "sha256") as one, BackgroundConsumer(second.update, "sha1") as two:
            for piece in read_ahead(iter([chunk] * count)):
                one.feed(piece)
                two.feed(piece)
                yield piece
            one.wait()
            two.wait()

    start, cpu = time.perf_counter(), time.process_time()
    outcomes = save_to_all([CountingBackend("a"), CountingBackend("b")], "v/x", stream())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(o.ok and o.stored == count * CHUNK for o in outcomes), outcomes
    tree = backup.__file__.rsplit("/backup/", 1)[0]
    result = {"scenario": "handoffs", "tree": tree, "chunks": count, "handoffs_s": round(wall, 3), "handoffs_cpu_s": round(cpu, 3)}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["backup", "encrypted", "handoffs"])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="zstd worker threads (default: one per CPU; 0: none)")
    args = parser.parse_args()
    if args.scenario == "handoffs":
        handoffs(args.size_mb)
        return

    tar = make_tar(args.size_mb * MB)
    chunks = [tar[i : i + CHUNK] for i in range(0, len(tar), CHUNK)]
    result = {"scenario": args.scenario, "tree": backup.__file__.rsplit("/backup/", 1)[0], "tar_mb": round(len(tar) / MB, 1)}
    stats = ArchiveStats()

    if args.scenario == "backup":
        backends = [CountingBackend("a"), CountingBackend("b")]
        start, cpu = time.perf_counter(), time.process_time()
        outcomes = save_to_all(backends, "v/x", compress_tar(cancellable(read_ahead(iter(chunks))), stats, threads=args.threads))
        result["backup_s"] = round(time.perf_counter() - start, 3)
        result["backup_cpu_s"] = round(time.process_time() - cpu, 3)
        assert all(o.ok and o.stored == stats.stored_size for o in outcomes), outcomes
        result["backup_MBps"] = round(len(tar) / MB / result["backup_s"], 1)
    else:
        import pyrage

        from backup.crypto.encryption import DecryptingReader, parse_recipients

        identity = pyrage.x25519.Identity.generate()
        recipients = parse_recipients([str(identity.to_public())])
        keeper = CountingBackend("kept", keep=True)
        start, cpu = time.perf_counter(), time.process_time()
        compressed = compress_tar(cancellable(read_ahead(iter(chunks))), stats, threads=args.threads)
        stored_chunks = encrypted_stored(compressed, recipients, stats)
        outcomes = save_to_all([keeper, CountingBackend("b")], "v/x", stored_chunks)
        result["encrypt_s"] = round(time.perf_counter() - start, 3)
        result["encrypt_cpu_s"] = round(time.process_time() - cpu, 3)
        assert all(o.ok and o.stored == stats.stored_size for o in outcomes), outcomes
        stored = b"".join(keeper.kept)
        keeper.kept = None
        start, cpu = time.perf_counter(), time.process_time()
        restored = 0
        for chunk in verified_tar(
            io.BytesIO(stored), expected_sha256=stats.sha256, expected_size=stats.stored_size,
            expected_entries=stats.entries, expected_content_digest=stats.content_digest,
            decrypt=lambda raw: DecryptingReader(raw, [identity]),
        ):
            restored += len(chunk)
        result["decrypt_s"] = round(time.perf_counter() - start, 3)
        result["decrypt_cpu_s"] = round(time.process_time() - cpu, 3)
        assert restored == len(tar)
        result["round_trip_s"] = round(result["encrypt_s"] + result["decrypt_s"], 3)
    result["stored_mb"] = round(stats.stored_size / MB, 1)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
