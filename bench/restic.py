"""Benchmark: repeat backups after a 1 % change, volsafe-on-restic against restic itself and .tar.zst.

The volume is built like issue 16's: 1 MiB files of random data (60 %), one database-like file
(30 %: 32 KiB pages, half random, half zeros), many small text files (20,000 per GB). Each round
changes about 1 % (0.6 % of the 1 MiB files rewritten, 96 pages per GB of the big file, 1 % of the
small files), then every contender backs the volume up once, in an order rotated each round:

- ``volsafe-restic``: ``volsafe backup VOL --to restic:REPO`` (restic in the helper, volume read-only);
- ``restic-direct``: ``restic backup`` of the volume's directory on this host (the anchor);
- ``tar|restic``: ``tar --sort=name -c DIR | restic backup --stdin`` (the streamed alternative);
- ``volsafe-tar.zst``: ``volsafe backup VOL --to DIR`` (a full archive every time).

Reported per contender: the first backup's time and bytes stored, and the median over the rounds
of the repeat backup's time and bytes added to its store (directory size growth); volsafe's and
restic-direct's peak RSS. Needs root (it writes the volume's directory directly) and a local daemon.

    python3 -m bench.restic --size-mb 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

from bench.common import DEFAULT_IMAGE, MB, ROOT, cleans_up, create_volume, dir_size, git_state, log, new_dir, new_token, new_volume_name, settle

MiB = 1 << 20
PAGE = 32 << 10
PASSWORD = "bench-password"


def build(path: str, size_mb: int, rng: random.Random) -> dict:
    """Fill ``path`` like the issue's volume; return what the change step needs."""
    scale = size_mb / 1000
    n_big, db_pages, n_small = max(1, int(600 * scale)), max(4, int(300 * MiB * scale) // PAGE), max(10, int(20_000 * scale))
    os.makedirs(f"{path}/files", exist_ok=True)
    os.makedirs(f"{path}/small", exist_ok=True)
    for i in range(n_big):
        with open(f"{path}/files/f{i:05d}", "wb") as f:
            f.write(os.urandom(MiB))
    with open(f"{path}/db.sqlite", "wb") as f:
        for _ in range(db_pages):
            f.write(os.urandom(PAGE // 2) + bytes(PAGE // 2))
    for i in range(n_small):
        with open(f"{path}/small/s{i:06d}.txt", "w") as f:
            f.write(f"record {i} {rng.random()}\n" * rng.randint(1, 40))
    return {"n_big": n_big, "db_pages": db_pages, "n_small": n_small, "scale": scale}


def change(path: str, shape: dict, rng: random.Random) -> None:
    """Change about 1 % of the volume, as in the issue."""
    for i in rng.sample(range(shape["n_big"]), max(1, round(6 * shape["scale"]))):
        with open(f"{path}/files/f{i:05d}", "wb") as f:
            f.write(os.urandom(MiB))
    with open(f"{path}/db.sqlite", "r+b") as f:
        for page in rng.sample(range(shape["db_pages"]), max(1, round(96 * shape["scale"]))):
            f.seek(page * PAGE)
            f.write(os.urandom(PAGE // 2) + bytes(PAGE // 2))
    for i in rng.sample(range(shape["n_small"]), max(1, round(200 * shape["scale"]))):
        with open(f"{path}/small/s{i:06d}.txt", "a") as f:
            f.write(f"changed {time.time()}\n")


def measured(cmd: list[str], env: dict, shell: bool = False) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in bytes of the process itself, stdout). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, shell=shell)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"failed ({proc.returncode}): {cmd}\n{err.decode(errors='replace')[-2000:]}")
    return elapsed, usage.ru_maxrss * 1024, out.decode(errors="replace")


@cleans_up
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where repositories and archives go [default: /tmp]")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    new_token()
    volume = new_volume_name("restic")
    mountpoint = create_volume(volume)
    work = new_dir(args.workdir, "vsbench-restic-")
    cache_volume = new_volume_name("restic-cache")
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "RESTIC_PASSWORD": PASSWORD, "XDG_CACHE_HOME": f"{work}/host-cache",
        "VOLSAFE_RESTIC_CACHE_VOLUME": cache_volume, "VOLSAFE_HELPER_IMAGE": DEFAULT_IMAGE,
    }
    volsafe = [sys.executable, "-c", "from backup.cli import main; main()"]
    stores = {name: f"{work}/{name}" for name in ("volsafe-restic", "volsafe-restic-stream", "restic-direct", "tar-restic", "volsafe-tar")}
    for name in ("volsafe-restic", "volsafe-restic-stream", "restic-direct", "tar-restic"):
        subprocess.run(["restic", "init", "-q", "-r", stores[name]], env=env, check=True)
    os.makedirs(stores["volsafe-tar"])
    restic_cache = f"{work}/direct-cache"
    commands = {
        "volsafe-restic": (volsafe + ["backup", volume, "--to", f"restic:{stores['volsafe-restic']}", "--json"], False),
        # The streamed mode remote repositories take (s3:, sftp:, rest:), forced on a local one to compare.
        "volsafe-restic-stream": (["env", "VOLSAFE_RESTIC_MODE=stream", *volsafe, "backup", volume, "--to",
                                   f"restic:{stores['volsafe-restic-stream']}", "--json"], False),
        "restic-direct": (["restic", "-r", stores["restic-direct"], "--cache-dir", restic_cache, "backup", mountpoint,
                           "--host", "bench", "--quiet"], False),
        "tar|restic": (f"tar --sort=name -C {mountpoint} -cf - . | restic -r {stores['tar-restic']} --cache-dir {restic_cache}-tar "
                       f"backup --stdin --stdin-filename volume.tar --host bench --quiet", True),
        "volsafe-tar.zst": (volsafe + ["backup", volume, "--to", stores["volsafe-tar"], "--json"], False),
    }
    store_of = {"volsafe-restic": "volsafe-restic", "volsafe-restic-stream": "volsafe-restic-stream", "restic-direct": "restic-direct", "tar|restic": "tar-restic",
                "volsafe-tar.zst": "volsafe-tar"}
    log(f"building a {args.size_mb} MB volume {volume}")
    shape = build(mountpoint, args.size_mb, rng)
    volume_bytes = dir_size(mountpoint)
    results: dict[str, dict] = {name: {"repeat_s": [], "repeat_added": [], "rss": []} for name in commands}

    def one(name: str) -> tuple[float, int]:
        settle()
        before = dir_size(stores[store_of[name]])
        cmd, shell = commands[name]
        elapsed, rss, _out = measured(cmd, env, shell)
        added = dir_size(stores[store_of[name]]) - before
        results[name]["rss"].append(rss)
        log(f"  {name}: {elapsed:.2f} s, {added / MB:.1f} MB added, peak RSS {rss / MB:.0f} MB")
        return elapsed, added

    log("first backups")
    for name in commands:
        results[name]["first_s"], results[name]["first_added"] = one(name)
    order = list(commands)
    for round_no in range(args.rounds):
        change(mountpoint, shape, rng)
        order = order[1:] + order[:1]
        log(f"round {round_no + 1}: {', '.join(order)}")
        for name in order:
            elapsed, added = one(name)
            results[name]["repeat_s"].append(elapsed)
            results[name]["repeat_added"].append(added)

    rows = []
    for name, r in results.items():
        rows.append({
            "contender": name, "first_s": round(r["first_s"], 2), "first_stored_mb": round(r["first_added"] / MB, 1),
            "repeat_s_median": round(statistics.median(r["repeat_s"]), 2),
            "repeat_added_mb_median": round(statistics.median(r["repeat_added"]) / MB, 1),
            "peak_rss_mb": round(max(r["rss"]) / MB),
        })
    print(json.dumps({"volume_mb": round(volume_bytes / MB), "rounds": args.rounds, "load": os.getloadavg()[0],
                      "commit": git_state(), "rows": rows}, indent=2))
    print("\n| contender | first backup | first stored | repeat backup (median) | bytes added (median) | peak RSS |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['contender']} | {row['first_s']} s | {row['first_stored_mb']} MB | {row['repeat_s_median']} s | "
              f"{row['repeat_added_mb_median']} MB | {row['peak_rss_mb']} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
