#!/usr/bin/env python3
"""Benchmark volsafe backup/restore against the Docker-docs `tar` recipe, on the same data, in one run.

    python3 bench/backup_restore.py [--size-mb 600] [--rounds 3]

What it does:

1. Generates a deterministic data set of about ``--size-mb`` MB inside a fresh, uniquely named
   Docker volume (streamed as a tar into ``tar -x`` in a helper container; nothing is staged on the
   host): ~40% incompressible pseudo-random blobs (SHAKE-256 in counter mode, seeded), ~20% JSON
   documents, ~6% small files (1-8 KB, ~9000 at 600 MB, in nested directories) and log-like text
   for the rest.
2. Runs one warm-up round (not counted; it also checks every restore against the source), then
   ``--rounds`` measured rounds. Each round, interleaved in the same order:
     backups:  volsafe backup --json  |  tar -cf recipe  |  tar -czf recipe
     restores: volsafe restore (new volume)  |  tar -xf recipe (new volume)  |  tar -xzf recipe
   Wall time is measured from the host (time.perf_counter around the subprocess). volsafe runs
   under ``/usr/bin/time -v`` (or a getrusage wrapper) for its peak RSS and CPU time.
3. Prints a markdown table of medians and writes it to bench/results.md, with raw data in
   bench/out/results.json.

Page caches are not dropped (that would disturb the whole machine): every run reads warm data.
Every volume, container and temporary directory it creates is removed, also on failure, Ctrl-C
and SIGTERM. Names carry a per-run token, so concurrent runs do not collide.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGE = os.environ.get("VOLSAFE_HELPER_IMAGE", "volsafe-helper:test")
BENCH_LABEL = "io.volsafe-bench.run"
MB = 1_000_000  # all sizes and rates are decimal megabytes
MTIME = 1_700_000_000  # fixed mtime for every generated entry: the data set is byte-for-byte stable
CMD_TIMEOUT = 3600

# What the run created, for clean-up. Filled as we go, emptied by cleanup().
_created_volumes: list[str] = []
_created_dirs: list[str] = []
_run_token = ""


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every finally block runs."""


def _on_sigterm(_signum, _frame):
    raise Terminated()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Running commands


def settle() -> float:
    """Flush dirty pages (untimed) so that one run's writes and deletions are not billed to the next; return 1-min load."""
    os.sync()
    return os.getloadavg()[0]


def run(cmd: list[str], *, env: dict | None = None, stdin_data: bytes | None = None, check: bool = True,
        timeout: float = CMD_TIMEOUT) -> tuple[float, str, str]:
    """Run ``cmd``; return (wall seconds, stdout, stderr). On Ctrl-C/SIGTERM the child is interrupted too."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin_data, timeout=timeout)
    except BaseException:
        _stop(proc)
        raise
    elapsed = time.perf_counter() - start
    out_s, err_s = out.decode(errors="replace"), err.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err_s.strip()[-2000:]}")
    return elapsed, out_s, err_s


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt a child (volsafe and the docker CLI both clean up on SIGINT), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def docker(*args: str, check: bool = True) -> str:
    return run(["docker", *args], check=check, timeout=600)[1]


def new_volume_name(what: str) -> str:
    name = f"vsbench-{_run_token}-{what}"
    _created_volumes.append(name)
    return name


def container_name(what: str) -> str:
    return f"vsbench-{_run_token}-{what}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------------------------
# Data set


class _GenReader:
    """A file-like object of ``size`` bytes produced lazily from an iterator of byte chunks."""

    def __init__(self, size: int, chunks):
        self.remaining = size
        self.chunks = iter(chunks)
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.remaining
        n = min(n, self.remaining)
        while len(self.buf) < n:
            self.buf += next(self.chunks)
        data, self.buf = self.buf[:n], self.buf[n:]
        self.remaining -= n
        return data


def _prng_blocks(seed: bytes, block: int = 1 << 20):
    """Endless deterministic incompressible bytes: SHAKE-256(seed || counter) in 1 MiB blocks."""
    counter = 0
    while True:
        yield hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(block)
        counter += 1


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


class DataSetWriter:
    """Streams the generated tree into a tar, recording what it wrote."""

    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.dirs: set[str] = set()
        self.stats: dict[str, dict[str, int]] = {}

    def _dir(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime, info.uid, info.gid = tarfile.DIRTYPE, 0o755, MTIME, 1000, 1000
                self.tar.addfile(info)

    def add(self, category: str, path: str, size: int, fileobj) -> None:
        self._dir(path)
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o644, MTIME, 1000, 1000
        self.tar.addfile(info, fileobj)
        s = self.stats.setdefault(category, {"files": 0, "bytes": 0})
        s["files"] += 1
        s["bytes"] += size


def generate_into_volume(volume: str, image: str, size_mb: int, seed: int) -> dict:
    """Create ``volume`` and fill it with the deterministic data set; return its composition."""
    total = size_mb * MB
    blob_budget, json_budget = int(total * 0.40), int(total * 0.20)
    n_small = max(50, round(9000 * size_mb / 600))
    rng = random.Random(seed)

    docker("volume", "create", "--label", f"{BENCH_LABEL}={_run_token}", volume)
    name = container_name("gen")
    proc = subprocess.Popen(
        ["docker", "run", "-i", "--rm", "--name", name, "--label", f"{BENCH_LABEL}={_run_token}", "--network", "none",
         "-v", f"{volume}:/data", image, "tar", "-xf", "-", "-C", "/data"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            w = DataSetWriter(tar)
            # Small files first, so that the tree is not sorted by size class.
            small_total = 0
            for i in range(n_small):
                path, data = _small_file(rng, i)
                small_total += len(data)
                w.add("small files (1-8 KB)", path, len(data), io.BytesIO(data))
            # A few large incompressible blobs: 40% split 4:3:2:1.
            for k, (fname, share) in enumerate([("db/ibdata1", 0.4), ("media/video-0001.mp4", 0.3),
                                                ("cache/pack-3f9a.pack", 0.2), ("models/embeddings.bin", 0.1)]):
                size = int(blob_budget * share)
                w.add("binary blobs", f"blobs/{fname}", size,
                      _GenReader(size, _prng_blocks(f"volsafe-bench-{seed}-blob{k}".encode())))
            # JSON documents of ~8 MB each.
            left, doc, next_id, json_total = json_budget, 0, 0, 0
            while left > 0:
                data, next_id = _json_doc(rng, min(8 * MB, left), next_id)
                w.add("JSON documents", f"json/export-{doc:03d}.json", len(data), io.BytesIO(data))
                left -= len(data)
                json_total += len(data)
                doc += 1
            # Logs: the rest, in ~16 MB files.
            left = total - blob_budget - json_total - small_total
            day = 0
            while left > 0:
                data = _log_text(rng, min(16 * MB, left), 1_700_000_000 + day * 86400.0)
                w.add("log text", f"logs/app/app-{day:03d}.log", len(data), io.BytesIO(data))
                left -= len(data)
                day += 1
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait(timeout=600) != 0:
            raise RuntimeError(f"filling the volume failed: {err.strip()}")
    except BaseException:
        _stop(proc)
        docker("rm", "-f", name, check=False)
        raise
    stats = w.stats
    stats["total"] = {"files": sum(s["files"] for s in stats.values()), "bytes": sum(s["bytes"] for s in stats.values()),
                      "dirs": len(w.dirs)}
    return stats


FINGERPRINT = ("cd /data && find . -type f | sort | xargs md5sum | md5sum && "
               "find . -type f | sort | xargs stat -c '%n %s %u %g %a %Y' | md5sum && find . | wc -l")


def fingerprint(volume: str, image: str) -> str:
    """Contents, sizes, owners, modes and mtimes of every file, plus the entry count, as one string."""
    out = docker("run", "--rm", "--name", container_name("fp"), "--label", f"{BENCH_LABEL}={_run_token}",
                 "--network", "none", "-v", f"{volume}:/data:ro", image, "sh", "-c", FINGERPRINT)
    return " ".join(out.split())


# --------------------------------------------------------------------------------------------
# The contenders


class Bench:
    def __init__(self, args, image: str, workdir: str):
        self.args = args
        self.image = image
        self.workdir = workdir
        self.env = {**os.environ, "VOLSAFE_HELPER_IMAGE": image}
        exe = shutil.which("volsafe")
        self.volsafe = [exe] if exe else [sys.executable, "-c", "import sys; from backup.cli import main; sys.exit(main(sys.argv[1:]))"]
        self.gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

    # volsafe, with peak RSS and CPU time
    def _volsafe(self, args: list[str]) -> dict:
        usage_file = os.path.join(self.workdir, f"usage-{secrets.token_hex(4)}.txt")
        if self.gnu_time:
            cmd = [self.gnu_time, "-v", "-o", usage_file, *self.volsafe, *args]
        else:
            wrapper = ("import json,resource,subprocess,sys;r=subprocess.call(sys.argv[2:]);"
                       "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
                       "open(sys.argv[1],'w').write(json.dumps([u.ru_maxrss,u.ru_utime,u.ru_stime]));sys.exit(r)")
            cmd = [sys.executable, "-c", wrapper, usage_file, *self.volsafe, *args]
        load = settle()
        wall, out, _err = run(cmd, env=self.env)
        rss_kb = user = sys_ = None
        text = Path(usage_file).read_text()
        os.unlink(usage_file)
        if self.gnu_time:
            for line in text.splitlines():
                key, _, value = line.strip().rpartition(": ")
                if key == "Maximum resident set size (kbytes)":
                    rss_kb = int(value)
                elif key == "User time (seconds)":
                    user = float(value)
                elif key == "System time (seconds)":
                    sys_ = float(value)
        else:
            rss_kb, user, sys_ = json.loads(text)
        return {"seconds": wall, "peak_rss_mb": rss_kb * 1024 / MB if rss_kb else None, "cpu_user_s": user,
                "cpu_sys_s": sys_, "load_before": load, "stdout": out}

    def volsafe_backup(self, volume: str, dest: str) -> dict:
        r = self._volsafe(["backup", volume, "--to", dest, "--json"])
        (record,) = json.loads(r.pop("stdout"))
        r.update(backup_id=record["id"], tar_size=record["size"], stored_size=record["stored_size"],
                 entries=record["entries"])
        return r

    def volsafe_restore(self, backup_id: str, src: str, volume: str) -> dict:
        r = self._volsafe(["restore", backup_id, "--from", src, "--to-volume", volume, "--json"])
        r.pop("stdout")
        return r

    # the Docker-docs recipe, verbatim apart from a name and a label for clean-up
    def _recipe(self, what: str, volume: str, mode: str, directory: str, tar_args: list[str]) -> dict:
        cmd = ["docker", "run", "--rm", "--name", container_name(what), "--label", f"{BENCH_LABEL}={_run_token}",
               "-v", f"{volume}:/data{mode}", "-v", f"{directory}:/backup", self.image, "tar", *tar_args]
        load = settle()
        wall, _out, _err = run(cmd)
        return {"seconds": wall, "load_before": load}

    def recipe_backup(self, volume: str, directory: str, gzip: bool) -> dict:
        name = "x.tar.gz" if gzip else "x.tar"
        r = self._recipe("tgz" if gzip else "tar", volume, ":ro", directory,
                         ["-czf" if gzip else "-cf", f"/backup/{name}", "-C", "/data", "."])
        r["stored_size"] = os.path.getsize(os.path.join(directory, name))
        return r

    def recipe_restore(self, directory: str, volume: str, gzip: bool) -> dict:
        name = "x.tar.gz" if gzip else "x.tar"
        return self._recipe("untgz" if gzip else "untar", volume, "", directory,
                            ["-xzf" if gzip else "-xf", f"/backup/{name}", "-C", "/data"])


BACKUPS = [("backup", "volsafe (tar.zst)"), ("backup", "recipe tar -cf"), ("backup", "recipe tar -czf")]
RESTORES = [("restore", "volsafe restore"), ("restore", "recipe tar -xf"), ("restore", "recipe tar -xzf")]


def one_round(bench: Bench, src_volume: str, label: str, verify: str | None) -> dict[str, dict]:
    """Back up with all three, then restore each into a fresh volume. Returns results keyed by contender."""
    d = tempfile.mkdtemp(prefix=f"{label}-", dir=bench.workdir)
    zst_dir, tar_dir = os.path.join(d, "volsafe"), os.path.join(d, "recipe")
    os.makedirs(zst_dir)
    os.makedirs(tar_dir)
    res: dict[str, dict] = {}
    restored: list[str] = []
    try:
        log(f"{label}: volsafe backup")
        res["volsafe (tar.zst)"] = bench.volsafe_backup(src_volume, zst_dir)
        log(f"{label}: recipe tar -cf")
        res["recipe tar -cf"] = bench.recipe_backup(src_volume, tar_dir, gzip=False)
        log(f"{label}: recipe tar -czf")
        res["recipe tar -czf"] = bench.recipe_backup(src_volume, tar_dir, gzip=True)

        for key, fn in [
            ("volsafe restore", lambda v: bench.volsafe_restore(res["volsafe (tar.zst)"]["backup_id"], zst_dir, v)),
            ("recipe tar -xf", lambda v: bench.recipe_restore(tar_dir, v, gzip=False)),
            ("recipe tar -xzf", lambda v: bench.recipe_restore(tar_dir, v, gzip=True)),
        ]:
            vol = new_volume_name(f"{label}-{key.split()[-1].lstrip('-')}")
            restored.append(vol)
            log(f"{label}: {key} -> {vol}")
            res[key] = fn(vol)
            if verify is not None:
                fp = fingerprint(vol, bench.image)
                res[key]["verified"] = fp == verify
                if fp != verify:
                    log(f"WARNING: {key} restored a tree that differs from the source: {fp} != {verify}")
    finally:
        for vol in restored:
            docker("volume", "rm", "-f", vol, check=False)
        shutil.rmtree(d, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------------
# Report


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rounds: list[dict[str, dict]], tar_bytes: int) -> dict[str, dict]:
    summary = {}
    for _kind, key in BACKUPS + RESTORES:
        runs = [r[key] for r in rounds]
        secs = [x["seconds"] for x in runs]
        med = _median(secs)
        s = {"median_s": med, "min_s": min(secs), "max_s": max(secs), "runs_s": secs, "mb_per_s": tar_bytes / MB / med}
        if "stored_size" in runs[0]:
            s["stored_size"] = runs[0]["stored_size"]
        if "peak_rss_mb" in runs[0]:
            s["peak_rss_mb_max"] = max(x["peak_rss_mb"] for x in runs if x["peak_rss_mb"] is not None)
            s["cpu_user_s_median"] = _median([x["cpu_user_s"] for x in runs])
            s["cpu_sys_s_median"] = _median([x["cpu_sys_s"] for x in runs])
        summary[key] = s
    return summary


def markdown(meta: dict, summary: dict[str, dict], tar_bytes: int) -> str:
    def f(x, fmt="{:.2f}"):
        return "–" if x is None else fmt.format(x)

    lines = [
        "# volsafe backup/restore benchmark",
        "",
        f"{meta['date']} · volsafe {meta['volsafe_version']} · Docker {meta['docker_version']} · "
        f"{meta['cpus']} CPUs · Python {meta['python']} · helper image `{meta['image']}`",
        "",
        f"Data set: {tar_bytes / MB:.0f} MB as tar ({meta['dataset']['total']['files']} files, "
        f"{meta['dataset']['total']['dirs']} dirs): "
        + ", ".join(f"{k} {v['bytes'] / MB:.0f} MB / {v['files']} files"
                    for k, v in meta["dataset"].items() if k != "total")
        + f". Median of {meta['rounds']} rounds after 1 warm-up round, interleaved; `sync` (untimed) before each run. "
        "MB = 10^6 bytes; MB/s = volume tar size / median wall time (host-side, incl. container start-up).",
        "",
        "| operation | tool | median s | min–max s | MB/s | stored MB | ratio | volsafe peak RSS MB | volsafe CPU user+sys s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, key in BACKUPS + RESTORES:
        s = summary[key]
        stored = s.get("stored_size")
        cpu = (s["cpu_user_s_median"] or 0) + (s["cpu_sys_s_median"] or 0) if "cpu_user_s_median" in s else None
        lines.append(
            f"| {kind} | {key} | {f(s['median_s'])} | {f(s['min_s'])}–{f(s['max_s'])} | {f(s['mb_per_s'], '{:.0f}')} | "
            f"{f(stored / MB if stored else None, '{:.1f}')} | {f(stored / tar_bytes if stored else None, '{:.3f}')} | "
            f"{f(s.get('peak_rss_mb_max'), '{:.0f}')} | {f(cpu, '{:.1f}')} |")
    vb, tb = summary["volsafe (tar.zst)"], summary["recipe tar -cf"]
    gz = summary["recipe tar -czf"]
    vr, tr = summary["volsafe restore"], summary["recipe tar -xf"]
    rss = max(vb["peak_rss_mb_max"] or 0, vr["peak_rss_mb_max"] or 0)
    targets = [
        ("backup no slower than `tar -cf`", f"{vb['median_s']:.2f} s vs {tb['median_s']:.2f} s "
         f"({vb['median_s'] / tb['median_s']:.2f}x)", vb["median_s"] <= tb["median_s"]),
        ("stored size no larger than `tar -czf`", f"{vb['stored_size'] / MB:.1f} MB vs {gz['stored_size'] / MB:.1f} MB",
         vb["stored_size"] <= gz["stored_size"]),
        ("restore within 1.2x of `tar -xf`", f"{vr['median_s']:.2f} s vs {tr['median_s']:.2f} s "
         f"({vr['median_s'] / tr['median_s']:.2f}x)", vr["median_s"] <= 1.2 * tr["median_s"]),
        ("volsafe peak RSS under 150 MB", f"{rss:.0f} MB (max over all backup and restore runs)", rss < 150),
    ]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets]
    if meta.get("verified"):
        lines += ["", "Warm-up restores checked against the source (content, size, owner, mode, mtime of every file; "
                      "entry count): " + ", ".join(f"{k}: {'ok' if v else 'MISMATCH'}" for k, v in meta["verified"].items())
                  + "."]
    loads = meta.get("loads") or []
    lines += ["", f"volsafe code measured: {meta['git']}. 1-minute load average before the measured runs: "
                  f"median {statistics.median(loads):.1f}, max {max(loads):.1f} on {meta['cpus']} CPUs"
                  + (" (the machine was busy with other work: times are inflated and scattered)" if max(loads) > 1.5 else "")
                  + "."] if loads else []
    lines += ["", "Notes: volsafe fsyncs the archive before renaming it into place; the recipe's tar does not "
                  "(its archive may still be in the page cache when the timer stops). Each number includes "
                  "container creation and removal.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def _git_state() -> str:
    """The commit measured, and whether volsafe's code differed from it (others may edit while we run)."""
    repo = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "backup", "storage_backends"],
                               capture_output=True, text=True).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
    except OSError:
        return "unknown"
    return head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")


def cleanup(image: str) -> None:
    """Remove every container, volume and directory this run created. Never raises."""
    # Our own containers (recipe, generator, fingerprint), then any volsafe helper still on our volumes.
    filters = [f"label={BENCH_LABEL}={_run_token}"] + [f"label=io.volsafe.volume={v}" for v in _created_volumes]
    for flt in filters:
        try:
            ids = docker("ps", "-aq", "--filter", flt, check=False).split()
            if ids:
                docker("rm", "-f", *ids, check=False)
        except Exception as exc:  # noqa: BLE001
            log(f"clean-up: {exc}")
    try:  # volsafe restore copies the source's labels, so restored volumes carry ours too
        labelled = docker("volume", "ls", "-q", "--filter", f"label={BENCH_LABEL}={_run_token}", check=False).split()
    except Exception:  # noqa: BLE001
        labelled = []
    for vol in dict.fromkeys(_created_volumes + labelled):
        try:
            docker("volume", "rm", "-f", vol, check=False)
        except Exception as exc:  # noqa: BLE001
            log(f"clean-up: {exc}")
    for d in _created_dirs:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    global _run_token
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=600, help="approximate data set size in MB (10^6 bytes) [600]")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds after the warm-up round [3]")
    p.add_argument("--seed", type=int, default=1, help="data set seed [1]")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"helper image for everything [{DEFAULT_IMAGE}]")
    p.add_argument("--workdir", default=None, help="where backups are written (a host directory) [system temp dir]")
    p.add_argument("--no-verify", action="store_true", help="skip checking the warm-up restores against the source")
    p.add_argument("--results", default=str(HERE / "results.md"), help="markdown output [bench/results.md]")
    p.add_argument("--json-out", default=str(HERE / "out" / "results.json"), help="raw output [bench/out/results.json]")
    args = p.parse_args()
    if args.rounds < 1 or args.size_mb < 1:
        p.error("--rounds and --size-mb must be at least 1")

    signal.signal(signal.SIGTERM, _on_sigterm)
    _run_token = secrets.token_hex(3)
    started = time.perf_counter()
    git_at_start = _git_state()
    try:
        docker("image", "inspect", args.image)
        workdir = tempfile.mkdtemp(prefix=f"volsafe-bench-{_run_token}-", dir=args.workdir)
        _created_dirs.append(workdir)
        bench = Bench(args, args.image, workdir)

        src = new_volume_name("src")
        log(f"generating ~{args.size_mb} MB into volume {src}")
        t = time.perf_counter()
        dataset = generate_into_volume(src, args.image, args.size_mb, args.seed)
        log(f"generated {dataset['total']['bytes'] / MB:.0f} MB, {dataset['total']['files']} files "
            f"in {time.perf_counter() - t:.1f} s")
        verify = None
        if not args.no_verify:
            verify = fingerprint(src, args.image)
            log(f"source fingerprint: {verify}")

        warm = one_round(bench, src, "warmup", verify)
        rounds = []
        for i in range(args.rounds):
            rounds.append(one_round(bench, src, f"r{i + 1}", None))
            log(f"round {i + 1}: " + ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in rounds[-1].items()))

        tar_bytes = rounds[0]["recipe tar -cf"]["stored_size"]
        summary = summarize(rounds, tar_bytes)
        versions = {}
        try:
            from importlib.metadata import version
            versions = {pkg: version(pkg) for pkg in ("volsafe", "zstandard", "docker")}
        except Exception:  # noqa: BLE001
            pass
        meta = {
            "git": git_at_start if git_at_start == _git_state() else f"changed during the run: {git_at_start} -> {_git_state()}",
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "volsafe_version": versions.get("volsafe", "?"),
            "package_versions": versions,
            "docker_version": docker("version", "--format", "{{.Server.Version}}").strip(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "image": args.image,
            "size_mb": args.size_mb,
            "seed": args.seed,
            "rounds": args.rounds,
            "dataset": dataset,
            "volume_tar_size": tar_bytes,
            "volsafe_tar_size": rounds[0]["volsafe (tar.zst)"]["tar_size"],
            "entries": rounds[0]["volsafe (tar.zst)"]["entries"],
            "verified": {k: v["verified"] for k, v in warm.items() if "verified" in v},
            "rss_tool": bench.gnu_time or "getrusage(RUSAGE_CHILDREN)",
            "loads": [run["load_before"] for r in rounds for run in r.values()],
        }
        md = markdown(meta, summary, tar_bytes)
        print(md)
        Path(args.results).write_text(md)
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta["total_runtime_s"] = time.perf_counter() - started
        out.write_text(json.dumps({"meta": meta, "summary": summary, "warmup": warm, "rounds": rounds}, indent=2) + "\n")
        log(f"wrote {args.results} and {out} in {meta['total_runtime_s']:.0f} s")
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        cleanup(args.image)


if __name__ == "__main__":
    sys.exit(main())
