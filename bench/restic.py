"""Benchmark: volsafe-on-restic against restic itself and .tar.zst: backups, restores, simulated days.

The volume is built like issue 16's: 1 MiB files of random data (60 %), one database-like file
(30 %: 32 KiB pages, half random, half zeros), many small text files (20,000 per GB). Each round
changes about 1 % (0.6 % of the 1 MiB files rewritten, 96 pages per GB of the big file, 1 % of the
small files), then every contender backs the volume up once, in an order rotated each round:

- ``volsafe-restic``: ``volsafe backup VOL --to restic:REPO`` (restic in the helper, volume read-only);
- ``volsafe-restic-stream``: the same with ``VOLSAFE_RESTIC_MODE=stream`` (the remote repositories' mode:
  a tar stream from the helper into restic on this host);
- ``restic-direct``: ``restic backup`` of the volume's directory on this host (the anchor);
- ``tar|restic``: ``tar --sort=name -c DIR | restic backup --stdin`` (the streamed alternative);
- ``volsafe-tar.zst``: ``volsafe backup VOL --to DIR`` (a full archive every time).

Reported per contender: the first backup's time and bytes stored, and the median over the rounds
of the repeat backup's time and bytes added to its store (directory size growth); the peak RSS of
the process run (backups and restores; in volsafe's helper mode restic runs in the container and is
not counted, in the streamed mode the host's restic is volsafe's child and is).

**Restores** follow all the backup rounds (so that the page-cache drops below do not touch the
backup timings): ``--rounds`` restore rounds, each restoring the newest snapshot of every store
once, in an order rotated each round; the median is reported.

- ``volsafe-restic``: ``volsafe restore VOL --from restic:REPO --to-volume NEW`` (restic restore in
  a helper into the new volume's staging directory, then volsafe's commit);
- ``restic-direct``: ``restic restore latest --target MOUNTPOINT`` (the anchor), MOUNTPOINT being a
  fresh Docker volume's directory, created with ``docker volume create`` like volsafe's target, so
  both write to the same filesystem (/var/lib/docker's). Its creation is not timed; volsafe's
  creation of its volume (and its helper, and its start-up) is. The snapshot holds the source
  mountpoint's absolute path, so the tree lands under MOUNTPOINT/var/lib/docker/volumes/...
  Its timing ends with ``sync -f MOUNTPOINT``: volsafe's restore ends with its data on disk (removing
  the helper unmounts its root filesystem, which syncs /var/lib/docker's filesystem), restic's
  ``restore`` with the data in the page cache; both are timed to "restored and on disk";
- ``volsafe-restic-stream`` (``restic dump`` on the host piped into a helper's tar) and
  ``volsafe-tar.zst``: the same volsafe command on their stores, for information.

Each restore gets a fresh target, removed (untimed) after it. Before each one the script syncs and
drops the page cache (``echo 3 > /proc/sys/vm/drop_caches``, as root), so every restore reads its
repository (and restic its cache directory, volsafe its Python modules and helper image) from disk;
if that write is refused the JSON says ``page_cache_dropped: false`` and the restores read warm
data. Each restored tree is checked against the source (untimed): file count, total bytes and a
digest of every file's path and size plus the contents of db.sqlite and of every 50th file, so a
fast but wrong restore fails the run instead of winning it. The two restic stores are different
repositories that received the same backups of the same volume.

**Days** (``--days N``, default 0 = off): after the restores, N more days of the same ~1 % change,
with only volsafe-restic and restic-direct backing up once a day (alternating which goes first);
then each store's total size (directory size: first backup, rounds and days; both got the same
sequence). The issue's policy is ``keep_daily = 30``; 30 daily backups keep all 30, so no forget
or prune runs on either side (volsafe cannot fake its clock to make the days real calendar days).

At the end a markdown table of the issue's targets for volsafe-restic against restic-direct, each
marked met or not: repeat backup time ≤ +1.0 s, bytes added ≤ 1.1x, first backup ≤ 1.2x, restore
≤ 1.2x, store size after the days ≤ 1.1x, volsafe's peak RSS ≤ 150 MB. Needs root (it writes the
volume's directory directly) and a local daemon.

    python3 -m bench.restic --size-mb 1000 --rounds 3 --days 30
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import stat
import statistics
import subprocess
import sys
import time

from bench.common import (
    DEFAULT_IMAGE,
    MB,
    ROOT,
    cleans_up,
    create_volume,
    dir_size,
    git_state,
    log,
    mountpoint as volume_mountpoint,
    new_dir,
    new_token,
    new_volume_name,
    remove_volume,
    settle,
)

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


def measured(cmd: list[str] | str, env: dict, shell: bool = False) -> tuple[float, int, str]:
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


def tree_summary(path: str) -> tuple[int, int, str]:
    """Return (regular files, their bytes, a digest of every file's relative path and size and of the contents
    of db.sqlite and of every 50th file in name order) of the tree at ``path``."""
    digest = hashlib.sha256()
    files = total = 0
    for base, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(base, name)
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(full, path)
            digest.update(f"{rel}\0{st.st_size}\0".encode())
            if rel == "db.sqlite" or files % 50 == 0:
                with open(full, "rb") as f:
                    while chunk := f.read(MiB):
                        digest.update(chunk)
            files += 1
            total += st.st_size
    return files, total, digest.hexdigest()


def drop_caches() -> bool:
    """Sync, then drop the page cache, dentries and inodes; return False if the kernel refused."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def verdict(value: float | None, limit: float) -> str:
    return "not measured" if value is None else ("met" if value <= limit else "**not met**")


@cleans_up
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where repositories and archives go [default: /tmp]")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--days", type=int, default=0, help="simulated days of 1 %% change after the restores [default: 0, off]")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    new_token()
    volume = new_volume_name("restic")
    mountpoint = create_volume(volume)
    work = new_dir(args.workdir, "vsbench-restic-")
    cache_volume = new_volume_name("restic-cache")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RESTIC_PASSWORD": PASSWORD,
        "XDG_CACHE_HOME": f"{work}/host-cache",
        "VOLSAFE_RESTIC_CACHE_VOLUME": cache_volume,
        "VOLSAFE_HELPER_IMAGE": DEFAULT_IMAGE,
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
        "volsafe-restic-stream": (
            ["env", "VOLSAFE_RESTIC_MODE=stream", *volsafe, "backup", volume, "--to", f"restic:{stores['volsafe-restic-stream']}", "--json"],
            False,
        ),
        "restic-direct": (
            ["restic", "-r", stores["restic-direct"], "--cache-dir", restic_cache, "backup", mountpoint, "--host", "bench", "--quiet"],
            False,
        ),
        "tar|restic": (
            f"tar --sort=name -C {mountpoint} -cf - . | restic -r {stores['tar-restic']} --cache-dir {restic_cache}-tar "
            f"backup --stdin --stdin-filename volume.tar --host bench --quiet",
            True,
        ),
        "volsafe-tar.zst": (volsafe + ["backup", volume, "--to", stores["volsafe-tar"], "--json"], False),
    }
    store_of = {
        "volsafe-restic": "volsafe-restic",
        "volsafe-restic-stream": "volsafe-restic-stream",
        "restic-direct": "restic-direct",
        "tar|restic": "tar-restic",
        "volsafe-tar.zst": "volsafe-tar",
    }
    log(f"building a {args.size_mb} MB volume {volume}")
    shape = build(mountpoint, args.size_mb, rng)
    volume_bytes = dir_size(mountpoint)
    results: dict[str, dict] = {name: {"repeat_s": [], "repeat_added": [], "rss": [], "restore_s": []} for name in commands}

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

    # Restores of the newest snapshot (the volume has not changed since the last round's backups).
    source = tree_summary(mountpoint)
    restore_from = {
        "volsafe-restic": f"restic:{stores['volsafe-restic']}",
        "volsafe-restic-stream": f"restic:{stores['volsafe-restic-stream']}",
        "volsafe-tar.zst": stores["volsafe-tar"],
    }
    dropped = True
    serial = 0

    def restore(name: str) -> float:
        nonlocal dropped, serial
        serial += 1
        target, target_dir = new_volume_name(f"restore{serial}"), ""
        if name == "restic-direct":
            target_dir = create_volume(target)  # untimed, like volsafe's target: a fresh Docker volume
            cmd: list[str] | str = f"restic -r {stores['restic-direct']} --cache-dir {restic_cache} restore latest --target {target_dir} && sync -f {target_dir}"
            shell = True
        else:
            cmd = volsafe + ["restore", volume, "--from", restore_from[name], "--to-volume", target, "--json"]
            shell = False
        try:
            dropped = drop_caches() and dropped
            elapsed, rss, _out = measured(cmd, env, shell)
            root = target_dir + mountpoint if name == "restic-direct" else volume_mountpoint(target)
            got = tree_summary(root)
            if got != source:
                raise RuntimeError(
                    f"{name}: restored {got[0]} files, {got[1]} bytes, digest {got[2][:12]}; "
                    f"the source has {source[0]}, {source[1]}, {source[2][:12]}"
                )
        finally:
            remove_volume(target)
        results[name]["rss"].append(rss)
        log(f"  {name} restore: {elapsed:.2f} s, peak RSS {rss / MB:.0f} MB, tree checked")
        return elapsed

    restorers = ["volsafe-restic", "restic-direct", "volsafe-restic-stream", "volsafe-tar.zst"]
    for round_no in range(args.rounds):
        restorers = restorers[1:] + restorers[:1]
        log(f"restore round {round_no + 1}: {', '.join(restorers)}")
        for name in restorers:
            results[name]["restore_s"].append(restore(name))
    if not dropped:
        log("could not drop the page cache: the restores read warm data")

    store_mb = None
    if args.days:
        daily = ["volsafe-restic", "restic-direct"]
        for day in range(args.days):
            change(mountpoint, shape, rng)
            daily.reverse()
            log(f"day {day + 1}: {', '.join(daily)}")
            for name in daily:
                one(name)
        store_mb = {name: dir_size(stores[store_of[name]]) / MB for name in daily}
        log(f"store sizes after {args.days} days: " + ", ".join(f"{n} {v:.1f} MB" for n, v in store_mb.items()))

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    rows = []
    for name, r in results.items():
        restore_median = med(r["restore_s"])
        rows.append(
            {
                "contender": name,
                "first_s": round(r["first_s"], 2),
                "first_stored_mb": round(r["first_added"] / MB, 1),
                "repeat_s_median": round(med(r["repeat_s"]) or 0, 2),
                "repeat_added_mb_median": round((med(r["repeat_added"]) or 0) / MB, 1),
                "restore_s_median": None if restore_median is None else round(restore_median, 2),
                "peak_rss_mb": round(max(r["rss"]) / MB),
            }
        )
    vs, rd = results["volsafe-restic"], results["restic-direct"]
    store = store_mb or {}

    def pair(key: str, unit: str, scale: float = 1, digits: int = 2) -> tuple[float | None, float | None, str, str]:
        """volsafe-restic's and restic-direct's median of ``key`` (or a scalar), and both shown."""
        values = [med(r[key]) if isinstance(r[key], list) else r[key] for r in (vs, rd)]
        values = [None if v is None else v / scale for v in values]
        shown = ["-" if v is None else f"{v:.{digits}f} {unit}" for v in values]
        return values[0], values[1], shown[0], shown[1]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b <= 0 else a / b

    # (target, volsafe-restic shown, restic-direct shown, measured value, measured shown, limit, limit shown)
    targets = []
    a, b, a_text, b_text = pair("repeat_s", "s")
    diff = None if a is None or b is None else a - b
    targets.append(("repeat backup time (median)", a_text, b_text, diff, None if diff is None else f"{diff:+.2f} s", 1.0, "≤ +1.0 s"))
    a, b, a_text, b_text = pair("repeat_added", "MB", MB, 1)
    targets.append(("bytes added by a repeat backup (median)", a_text, b_text, ratio(a, b), None, 1.1, "≤ 1.1x"))
    a, b, a_text, b_text = pair("first_s", "s")
    targets.append(("first backup time", a_text, b_text, ratio(a, b), None, 1.2, "≤ 1.2x"))
    a, b, a_text, b_text = pair("restore_s", "s")
    targets.append(("restore time (median)", a_text, b_text, ratio(a, b), None, 1.2, "≤ 1.2x"))
    a, b = store.get("volsafe-restic"), store.get("restic-direct")
    targets.append(
        (
            f"store size after the first backup, {args.rounds} rounds and {args.days} days",
            "-" if a is None else f"{a:.1f} MB",
            "-" if b is None else f"{b:.1f} MB",
            ratio(a, b),
            None,
            1.1,
            "≤ 1.1x",
        )
    )
    rss = max(vs["rss"]) / MB
    targets.append(("volsafe's peak RSS (backups and restores)", f"{rss:.0f} MB", "-", rss, f"{rss:.0f} MB", 150, "≤ 150 MB"))
    target_rows = [
        {
            "target": what,
            "volsafe_restic": a_text,
            "restic_direct": b_text,
            "measured": None if value is None else round(value, 3),
            "limit": limit,
            "verdict": verdict(value, limit),
        }
        for what, a_text, b_text, value, _shown, limit, _limit_text in targets
    ]
    print(
        json.dumps(
            {
                "volume_mb": round(volume_bytes / MB),
                "rounds": args.rounds,
                "days": args.days,
                "page_cache_dropped": dropped,
                "load": os.getloadavg()[0],
                "commit": git_state(),
                "rows": rows,
                "targets": target_rows,
            },
            indent=2,
        )
    )
    print("\n| contender | first backup | first stored | repeat backup (median) | bytes added (median) | restore (median) | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        restore_text = "-" if row["restore_s_median"] is None else f"{row['restore_s_median']} s"
        print(
            f"| {row['contender']} | {row['first_s']} s | {row['first_stored_mb']} MB | {row['repeat_s_median']} s | "
            f"{row['repeat_added_mb_median']} MB | {restore_text} | {row['peak_rss_mb']} MB |"
        )
    print("\n| target (volsafe-restic against restic-direct) | volsafe-restic | restic-direct | measured | target | |")
    print("|---|---|---|---|---|---|")
    for what, a_text, b_text, value, shown, limit, limit_text in targets:
        measured_text = "-" if value is None else (shown or f"{value:.2f}x")
        print(f"| {what} | {a_text} | {b_text} | {measured_text} | {limit_text} | {verdict(value, limit)} |")
    print(
        f"\nLoad average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; page cache dropped before each restore: "
        f"{'yes' if dropped else 'no (the restores read warm data)'}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
