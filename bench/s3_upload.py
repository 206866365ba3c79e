"""Benchmark: S3Backend.save streaming versus boto3's upload_fileobj, against moto's S3 server.

    python bench/s3_upload.py [--size-mb 300] [--repeat 2]

Starts moto's server on 127.0.0.1 (a free port), writes a .tar.zst-like archive of about
``--size-mb`` MB (tar members alternating random blobs and log-like text, zstd level 3) to
bench/out/, then uploads it several ways, each in a fresh subprocess so that its peak RSS is its
own (VmHWM from /proc, falling back to ``resource.getrusage``; see ``peak_rss_kib``):

* S3Backend.save fed 1 MiB chunks read from the file (how the engine streams), with its defaults
  and with boto3's transfer defaults (8 MiB parts, 10 threads) for a like-for-like comparison;
* boto3's ``upload_fileobj`` of the ready-made file with default settings.

moto keeps every upload in the benchmark's own process and computes MD5s in Python, so absolute
MB/s say more about moto than about S3; the ratios and the memory figures are what matter.
Not a test: nothing is asserted except that each upload arrived whole.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make storage_backends importable

MiB = 1024 * 1024
MEMBER = 8 * MiB
OUT = ROOT / "bench" / "out"

METHODS = {
    "s3backend": "S3Backend.save (16 MiB parts x 4, streamed)",
    "s3backend-8x10": "S3Backend.save (8 MiB parts x 10, streamed)",
    "upload_fileobj": "boto3 upload_fileobj (defaults)",
}


# -- the archive -----------------------------------------------------------------------------


def log_text(size: int, rng: random.Random) -> bytes:
    """Return about ``size`` bytes of compressible, log-like text."""
    paths = ["/api/v1/items", "/api/v1/users", "/healthz", "/static/app.js", "/api/v2/orders"]
    lines = []
    total = 0
    while total < size:
        n = rng.randrange(1 << 30)
        line = (
            f"2026-11-27T22:{n % 60:02d}:{n % 59:02d}.{n % 1000:03d}Z INFO http request id={n:08x} "
            f"method=GET path={paths[n % len(paths)]}/{n % 977} status={200 if n % 13 else 404} "
            f"bytes={n % 65536} ms={n % 250}\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def make_archive(path: Path, target_bytes: int) -> None:
    """Write a tar.zst of alternating random and text members until it is ``target_bytes`` long."""
    import zstandard

    rng = random.Random(42)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as raw:
        with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as zst:
            with tarfile.open(fileobj=zst, mode="w|") as tar:
                n = 0
                while raw.tell() < target_bytes:
                    name, data = (
                        (f"data/blob-{n}.bin", rng.randbytes(MEMBER)) if n % 2 == 0
                        else (f"logs/app-{n}.log", log_text(MEMBER, rng))
                    )
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = 1_800_000_000
                    tar.addfile(info, BytesIO(data))
                    n += 1
    tmp.replace(path)


# -- one measured upload (runs in a child process) -------------------------------------------


def run_child(method: str, bucket: str, file: Path) -> None:
    """Upload ``file`` one way and print a JSON line with the timing and RSS figures."""
    import boto3

    from storage_backends.s3 import S3Backend

    key = f"bench/{method}.tar.zst"
    if method == "upload_fileobj":
        client = boto3.client("s3")
        upload = lambda f: client.upload_fileobj(f, bucket, key)  # noqa: E731
    else:
        settings = {} if method == "s3backend" else {"part_size": 8 * MiB, "concurrency": 10}
        backend = S3Backend.from_url(f"s3://{bucket}/bench", **settings)
        upload = lambda f: backend.save(f"{method}.tar.zst", iter(lambda: f.read(MiB), b""))  # noqa: E731
    baseline = peak_rss_kib()
    with open(file, "rb") as f:
        start = time.perf_counter()
        upload(f)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "baseline_kib": baseline, "peak_kib": peak_rss_kib()}))


def peak_rss_kib() -> int:
    """Return this process's peak RSS in KiB.

    On Linux, getrusage's ru_maxrss of a freshly exec'd child starts at its parent's RSS at fork
    time (the kernel carries the old high-water mark across exec), and the parent here holds moto's
    stored uploads. VmHWM in /proc/self/status is the high-water mark of this program alone.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- the driver ------------------------------------------------------------------------------


def start_moto() -> tuple[object, str]:
    """Start moto's S3 server on 127.0.0.1; return it and its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def measure(method: str, bucket: str, file: Path, env: dict[str, str]) -> dict:
    """Run one upload in a child process; return its figures. Raises if the child failed."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", method, "--bucket", bucket, "--file", str(file)],
        env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300, help="archive size in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method; the best is shown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.bucket, args.file)
        return

    OUT.mkdir(parents=True, exist_ok=True)
    archive = OUT / f"sample-{args.size_mb}MB.tar.zst"
    if not archive.exists():
        started = time.perf_counter()
        make_archive(archive, args.size_mb * 1_000_000)
        print(f"wrote {archive} in {time.perf_counter() - started:.1f} s")
    size = archive.stat().st_size

    env = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        env.pop(name, None)
    env.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    os.environ.update(env)
    server, endpoint = start_moto()
    env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        import boto3

        client = boto3.client("s3")
        bucket = "volsafe-bench"
        client.create_bucket(Bucket=bucket)
        results: dict[str, list[dict]] = {m: [] for m in METHODS}
        for _ in range(args.repeat):
            for method in METHODS:  # interleaved, so that a busy machine hurts every method alike
                figures = measure(method, bucket, archive, env)
                key = f"bench/{method}.tar.zst"
                stored = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
                if stored != size:
                    raise SystemExit(f"{method}: stored {stored} bytes, expected {size}")
                client.delete_object(Bucket=bucket, Key=key)  # moto keeps objects in this process
                results[method].append(figures)
    finally:
        server.stop()
    print_table(results, size, endpoint, args.repeat)


def print_table(results: dict[str, list[dict]], size: int, endpoint: str, repeat: int) -> None:
    print(f"\nUpload of a {size / 1e6:.1f} MB .tar.zst to moto's S3 server at {endpoint}; "
          f"best of {repeat} runs each; MB = 10^6 bytes, MiB = 2^20 bytes")
    header = f"{'method':<46} {'MB/s':>7} {'seconds':>8} {'peak RSS MiB':>13} {'growth MiB':>11}"
    print(header)
    print("-" * len(header))
    for method, runs in results.items():
        best = min(runs, key=lambda r: r["seconds"])
        peak = max(r["peak_kib"] for r in runs) / 1024
        growth = max(r["peak_kib"] - r["baseline_kib"] for r in runs) / 1024
        print(f"{METHODS[method]:<46} {size / 1e6 / best['seconds']:>7.1f} {best['seconds']:>8.2f} "
              f"{peak:>13.0f} {growth:>11.0f}")
    print("growth = peak RSS during the upload minus peak RSS after imports and client set-up")


if __name__ == "__main__":
    main()
