"""Deterministic data sets, streamed as a tar into a fresh Docker volume (nothing staged on the host).

Three sets (the same seed gives the same bytes; compare the fingerprints in the output):

* ``mixed``: about ``size_mb`` MB (600 by default) of incompressible blobs (40%), pretty-printed JSON
  (20%), small files of 1-8 KB (~6%, 9000 at 600 MB) and log text for the rest. Byte-for-byte the
  set of the former ``bench/backup_restore.py``.
* ``small``: ``n_files`` (200,000 by default) files of 0.5-4 KB (log text 50%, JSON 35%, binary
  15%) in 2-level nested directories of 100 files each.
* ``big``: about ``size_gb`` GB (10 by default) of real, generated data in ~40 files of up to 256 MiB: 40%
  incompressible (SHAKE-256 counter mode), 40% log text, 20% JSON, plus 2000 small files. The
  compressible files are 1 MiB slices, at seeded random offsets, of a 24 MB pool of log text or
  JSON generated at start: this keeps generation fast enough (several hundred MB/s) while
  compressors with a window below the pool size (gzip: 32 KB; zstd -3: a few MB) see ordinary
  log/JSON data. Deduplicating tools (restic) or zstd's long mode could exploit the repetition.
  No sparse files.

The generators are pure iterators of :class:`Entry`; :func:`tar_digest` hashes the tar stream
without Docker (used by the unit tests for determinism).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import random
import subprocess
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator

from bench.common import MB, container_name, docker, label_args, stop

MTIME = 1_700_000_000  # fixed mtime for every generated entry: the data sets are byte-for-byte stable
MiB = 1 << 20
DATASETS = ("mixed", "small", "big")


@dataclass
class Entry:
    category: str
    path: str
    size: int
    open: Callable[[], object]  # returns a file-like object with read(n)


class _GenReader:
    """A file-like object of ``size`` bytes produced lazily from an iterator of byte chunks (cheap reads)."""

    def __init__(self, size: int, chunks):
        self.remaining = size
        self.chunks = iter(chunks)
        self.buf = memoryview(b"")
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.remaining:
            n = self.remaining
        out = []
        got = 0
        while got < n:
            if self.pos >= len(self.buf):
                self.buf, self.pos = memoryview(next(self.chunks)), 0
            take = min(n - got, len(self.buf) - self.pos)
            out.append(self.buf[self.pos:self.pos + take])
            self.pos += take
            got += take
        self.remaining -= n
        return b"".join(out)


def _prng_blocks(seed: bytes, block: int = MiB):
    """Endless deterministic incompressible bytes: SHAKE-256(seed || counter) in 1 MiB blocks."""
    counter = 0
    while True:
        yield hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(block)
        counter += 1


def _pool_slices(pool: bytes, rng: random.Random, block: int = MiB):
    """Endless 1 MiB slices of ``pool`` at seeded random offsets."""
    mv = memoryview(pool)
    while True:
        off = rng.randrange(len(pool) - block)
        yield mv[off:off + block]


_LEVELS = ["INFO"] * 70 + ["DEBUG"] * 20 + ["WARN"] * 7 + ["ERROR"] * 3
_SERVICES = ["api", "worker", "scheduler", "auth", "billing", "search", "gateway"]
_PATHS = ["/api/v1/items", "/api/v1/users", "/api/v1/orders", "/healthz", "/api/v2/search", "/login",
          "/static/app.js", "/api/v1/invoices", "/metrics"]
_METHODS = ["GET"] * 8 + ["POST", "PUT", "DELETE"]
_STATUS = [200] * 40 + [201, 204, 301, 304, 400, 401, 403, 404, 404, 500, 502, 503]
_AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
           "curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1", "kube-probe/1.29"]
_MESSAGES = [
    "cache miss for key user:{n}", "retrying upstream call attempt={a} backoff_ms={b}",
    "connection pool stats active={a} idle={b} waiting=0", "job {h} finished in {d}ms rows={n}",
    "slow query took {d}ms: SELECT * FROM orders WHERE customer_id = {n} ORDER BY created_at DESC LIMIT 50",
    "token refreshed for session {h}", "published event order.updated id={n} partition={a}",
]
_WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
          "upsilon phi chi psi omega red green blue cyan magenta yellow black white north south east west").split()


def _log_text(rng: random.Random, size: int, t0: float) -> bytes:
    """Roughly ``size`` bytes of access/application log lines (compresses ~5-10x, like real logs)."""
    lines: list[str] = []
    total = 0
    t = t0
    while total < size:
        t += rng.random() * 0.05
        ts = _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{int(t * 1000) % 1000:03d}Z"
        svc = rng.choice(_SERVICES)
        if rng.random() < 0.6:
            line = (f'{ts} INFO  [{svc}-{rng.randrange(8)}] http method={rng.choice(_METHODS)} '
                    f'path={rng.choice(_PATHS)}/{rng.randrange(100000)} status={rng.choice(_STATUS)} '
                    f'bytes={rng.randrange(50, 90000)} dur_ms={rng.random() * 300:.1f} req={rng.getrandbits(64):016x} '
                    f'ip=10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)} ua="{rng.choice(_AGENTS)}"\n')
        else:
            msg = rng.choice(_MESSAGES).format(n=rng.randrange(10 ** 6), a=rng.randrange(16), b=rng.randrange(2000),
                                               h=f"{rng.getrandbits(48):012x}", d=rng.randrange(5000))
            line = f"{ts} {rng.choice(_LEVELS):<5} [{svc}-{rng.randrange(8)}] {msg}\n"
            if rng.random() < 0.01:  # the occasional stack trace
                line += "".join(f"    at com.example.{rng.choice(_WORDS)}.{rng.choice(_WORDS).title()}Service"
                                f".handle({rng.choice(_WORDS).title()}.java:{rng.randrange(30, 900)})\n" for _ in range(8))
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _json_record(rng: random.Random, n: int) -> dict:
    return {
        "id": n,
        "uuid": f"{rng.getrandbits(128):032x}",
        "name": f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS).title()}",
        "email": f"{rng.choice(_WORDS)}.{rng.randrange(10000)}@example.com",
        "created": _dt.datetime.fromtimestamp(1_600_000_000 + rng.randrange(10 ** 8), _dt.timezone.utc).isoformat(),
        "active": rng.random() < 0.8,
        "score": round(rng.random() * 100, 3),
        "tags": rng.sample(_WORDS, rng.randrange(1, 5)),
        "address": {"street": f"{rng.randrange(1, 999)} {rng.choice(_WORDS).title()} St", "zip": f"{rng.randrange(10 ** 5):05d}",
                    "country": rng.choice(["DE", "FR", "US", "GB", "JP", "BR"])},
        "orders": [{"sku": f"SKU-{rng.randrange(10 ** 6):06d}", "qty": rng.randrange(1, 9), "price": round(rng.random() * 500, 2)}
                   for _ in range(rng.randrange(0, 4))],
    }


def _json_doc(rng: random.Random, size: int, first_id: int) -> tuple[bytes, int]:
    """A pretty-printed JSON array of records, about ``size`` bytes; returns it and the next record id."""
    parts = []
    total = 4
    n = first_id
    while total < size:
        part = json.dumps(_json_record(rng, n), indent=2)
        parts.append(part)
        total += len(part) + 2
        n += 1
    return ("[\n" + ",\n".join(parts) + "\n]\n").encode(), n


def _small_file(rng: random.Random, i: int) -> tuple[str, bytes]:
    size = rng.randrange(1024, 8 * 1024 + 1)
    kind = rng.random()
    if kind < 0.45:
        data = _log_text(rng, size, 1_700_000_000 + i * 10.0)[:size]
        ext = "txt"
    elif kind < 0.80:
        data = json.dumps({"id": i, "items": [_json_record(rng, i * 100 + k) for k in range(max(1, size // 330))]}).encode()
        ext = "json"
    else:
        data = hashlib.shake_256(b"small" + i.to_bytes(4, "big")).digest(size)
        ext = "bin"
    return f"small/d{rng.randrange(24):02d}/s{rng.randrange(12):02d}/f{i:05d}.{ext}", data


# --------------------------------------------------------------------------------------------
# The three sets, as iterators of entries


def _bytes_entry(category: str, path: str, data: bytes) -> Entry:
    return Entry(category, path, len(data), lambda: io.BytesIO(data))


def mixed_entries(size_mb: int, seed: int) -> Iterator[Entry]:
    """The 600 MB mixed set of the original benchmark (same bytes for the same size and seed)."""
    total = size_mb * MB
    blob_budget, json_budget = int(total * 0.40), int(total * 0.20)
    n_small = max(50, round(9000 * size_mb / 600))
    rng = random.Random(seed)
    # Small files first, so that the tree is not sorted by size class.
    small_total = 0
    for i in range(n_small):
        path, data = _small_file(rng, i)
        small_total += len(data)
        yield _bytes_entry("small files (1-8 KB)", path, data)
    # A few large incompressible blobs: 40% split 4:3:2:1.
    for k, (fname, share) in enumerate([("db/ibdata1", 0.4), ("media/video-0001.mp4", 0.3),
                                        ("cache/pack-3f9a.pack", 0.2), ("models/embeddings.bin", 0.1)]):
        size = int(blob_budget * share)
        blob_seed = f"volsafe-bench-{seed}-blob{k}".encode()
        yield Entry("binary blobs", f"blobs/{fname}", size,
                    lambda size=size, s=blob_seed: _GenReader(size, _prng_blocks(s)))
    # JSON documents of ~8 MB each.
    left, doc, next_id, json_total = json_budget, 0, 0, 0
    while left > 0:
        data, next_id = _json_doc(rng, min(8 * MB, left), next_id)
        yield _bytes_entry("JSON documents", f"json/export-{doc:03d}.json", data)
        left -= len(data)
        json_total += len(data)
        doc += 1
    # Logs: the rest, in ~16 MB files.
    left = total - blob_budget - json_total - small_total
    day = 0
    while left > 0:
        data = _log_text(rng, min(16 * MB, left), 1_700_000_000 + day * 86400.0)
        yield _bytes_entry("log text", f"logs/app/app-{day:03d}.log", data)
        left -= len(data)
        day += 1


def small_entries(n_files: int, seed: int) -> Iterator[Entry]:
    """``n_files`` files of 0.5-4 KB in directories of 100 files (files/dNNN/sN/fNNNNNN.ext)."""
    rng = random.Random(seed * 1_000_003 + 7)
    for i in range(n_files):
        size = rng.randrange(512, 4096 + 1)
        kind = rng.random()
        if kind < 0.50:
            data, ext = _log_text(rng, size, 1_700_000_000 + i * 3.0)[:size], "log"
        elif kind < 0.85:
            records, text = [], ""
            while len(text) < size:
                records.append(_json_record(rng, i * 20 + len(records)))
                text = json.dumps(records, indent=1)
            data, ext = text.encode()[:size], "json"
        else:
            data, ext = hashlib.shake_256(b"tiny" + seed.to_bytes(4, "big") + i.to_bytes(4, "big")).digest(size), "bin"
        yield _bytes_entry("small files (0.5-4 KB)", f"files/d{i // 1000:03d}/s{(i // 100) % 10}/f{i:06d}.{ext}", data)


def big_entries(size_gb: float, seed: int, file_size: int | None = None, pool_size: int | None = None) -> Iterator[Entry]:
    """About ``size_gb`` GB: 40% incompressible, 40% log text, 20% JSON in ~40 large files, plus 2000 small files.

    ``file_size`` defaults to 1/40 of the set, at most 256 MiB (250 MB at 10 GB), so that small sets keep
    the mix; ``pool_size`` (default: 24 MB, less for small sets) is the size of each text pool.
    """
    total = int(size_gb * 1000 * MB)
    file_size = file_size or min(256 * MiB, max(MiB, total // 40))
    rng = random.Random(seed * 7919 + 3)
    small_total = 0
    for i in range(min(2000, max(50, total // (5 * MiB)))):
        path, data = _small_file(rng, i)
        small_total += len(data)
        yield _bytes_entry("small files (1-8 KB)", path, data)
    pool_size = pool_size or min(24 * MB, max(4 * MiB, total // 8))
    log_pool = _log_text(rng, pool_size, 1_700_000_000.0)
    json_pool, _ = _json_doc(rng, pool_size, 0)
    pattern = ["blob", "log", "json", "blob", "log"]
    left, k = total - small_total, 0
    while left > 0:
        size = min(file_size, left)
        kind = pattern[k % len(pattern)]
        if kind == "blob":
            s = f"volsafe-bench-big-{seed}-blob{k}".encode()
            yield Entry("binary blobs", f"blobs/blob-{k:03d}.bin", size, lambda size=size, s=s: _GenReader(size, _prng_blocks(s)))
        else:
            pool, cat, path = ((log_pool, "log text", f"logs/app-{k:03d}.log") if kind == "log"
                               else (json_pool, "JSON documents", f"json/export-{k:03d}.json"))
            sub_seed = rng.getrandbits(64)
            yield Entry(cat, path, size,
                        lambda size=size, pool=pool, ss=sub_seed: _GenReader(size, _pool_slices(pool, random.Random(ss))))
        left -= size
        k += 1


def entries(name: str, *, seed: int, size_mb: int = 600, n_files: int = 200_000, size_gb: float = 10) -> Iterator[Entry]:
    if name == "mixed":
        return mixed_entries(size_mb, seed)
    if name == "small":
        return small_entries(n_files, seed)
    if name == "big":
        return big_entries(size_gb, seed)
    raise ValueError(f"unknown data set {name!r} (choose from {', '.join(DATASETS)})")


# --------------------------------------------------------------------------------------------
# Streaming the entries as a tar


def write_tar(fileobj, items: Iterator[Entry]) -> dict:
    """Write ``items`` as a GNU tar stream (directories first-seen, owner 1000:1000, fixed mtime); return stats."""
    dirs: set[str] = set()
    stats: dict[str, dict[str, int]] = {}
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.GNU_FORMAT, copybufsize=MiB) as tar:
        for e in items:
            parts = e.path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime, info.uid, info.gid = tarfile.DIRTYPE, 0o755, MTIME, 1000, 1000
                    tar.addfile(info)
            info = tarfile.TarInfo(e.path)
            info.size, info.mode, info.mtime, info.uid, info.gid = e.size, 0o644, MTIME, 1000, 1000
            tar.addfile(info, e.open())
            s = stats.setdefault(e.category, {"files": 0, "bytes": 0})
            s["files"] += 1
            s["bytes"] += e.size
    stats["total"] = {"files": sum(s["files"] for s in stats.values()), "bytes": sum(s["bytes"] for s in stats.values()),
                      "dirs": len(dirs)}
    return stats


class _HashSink:
    def __init__(self):
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b) -> int:
        self.h.update(b)
        self.n += len(b)
        return len(b)


def tar_digest(items: Iterator[Entry]) -> tuple[str, int, dict]:
    """SHA-256 and length of the tar stream of ``items``, plus its stats (no Docker; for determinism checks)."""
    sink = _HashSink()
    stats = write_tar(sink, items)
    return sink.h.hexdigest(), sink.n, stats


def generate_into_volume(volume: str, image: str, items: Iterator[Entry]) -> dict:
    """Create ``volume`` and fill it by streaming ``items`` as a tar into ``tar -x`` in a helper container."""
    docker("volume", "create", *label_args(), volume)
    name = container_name("gen")
    proc = subprocess.Popen(
        ["docker", "run", "-i", "--rm", "--name", name, *label_args(), "--network", "none",
         "-v", f"{volume}:/data", image, "tar", "-xf", "-", "-C", "/data"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        stats = write_tar(proc.stdin, items)
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait(timeout=600) != 0:
            raise RuntimeError(f"filling the volume failed: {err.strip()}")
    except BaseException:
        stop(proc)
        docker("rm", "-f", name, check=False)
        raise
    return stats


# Contents, sizes, owners, modes and mtimes of every file, plus the entry count. The sampled form
# (for the big set) hashes the contents of every 4th file only, but stats all of them.
FINGERPRINT = ("cd /data && find . -type f | sort | xargs md5sum | md5sum && "
               "find . -type f | sort | xargs stat -c '%n %s %u %g %a %Y' | md5sum && find . | wc -l")
FINGERPRINT_SAMPLED = ("cd /data && find . -type f | sort | awk 'NR%4==1' | xargs md5sum | md5sum && "
                       "find . -type f | sort | xargs stat -c '%n %s %u %g %a %Y' | md5sum && find . | wc -l")


def fingerprint(volume: str, image: str, sampled: bool = False) -> str:
    out = docker("run", "--rm", "--name", container_name("fp"), *label_args(), "--network", "none",
                 "-v", f"{volume}:/data:ro", image, "sh", "-c", FINGERPRINT_SAMPLED if sampled else FINGERPRINT)
    return " ".join(out.split())
