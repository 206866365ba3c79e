#!/usr/bin/env python3
"""The benchmark suite of issue 8: volsafe against the usual ways of backing up a Docker volume.

    python3 bench/run.py                       # the full run: mixed 600 MB, 200,000 small files, 10 GB
    python3 bench/run.py --quick               # smoke run at tiny sizes (results in bench/out/quick-*)
    python3 bench/run.py --datasets mixed --levels 1,3,6 --contenders volsafe,host-zstd,tgz   # a level sweep

For each data set it generates the data deterministically into a fresh volume, runs one warm-up
round (untimed; it checks every restore against the source), then ``--rounds`` measured rounds in
which all contenders back up the same volume and then restore into fresh volumes, interleaved
(the order rotates each round), with an untimed ``sync`` before every run. It prints a markdown
table of medians, writes it to bench/results.md, the raw data to bench/out/results.json and a
chart to docs/benchmark.png. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python3 bench/run.py` from anywhere

from bench import contenders as C  # noqa: E402
from bench import datasets as D  # noqa: E402
from bench import report as R  # noqa: E402
from bench.common import (
    DEFAULT_IMAGE,
    DROP_CACHES,
    HERE,
    MB,
    ROOT,
    VolumeRemovals,
    cleans_up,
    create_volume,
    docker,
    git_state,  # noqa: E402
    log,
    mountpoint,
    new_dir,
    new_token,
    new_volume_name,
    remove_volume,
)

QUICK = {"size_mb": 50, "small_files": 5000, "big_gb": 0.3, "rounds": 1, "big_rounds": 1}


def parse_levels(text: str | None) -> list[int | None]:
    """'1,3' -> [1, 3]; 'default' -> None (volsafe's own default); empty -> [None]."""
    if not text:
        return [None]
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        out.append(None if part in ("", "default") else int(part))
    return out


def parse_list(text: str, allowed) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def disk_needed(size_bytes: int, keys: list[str], n_volsafe: int) -> int:
    """Rough peak disk use of one round: the source, every backup kept until the restores, one restored copy."""
    per = {"tar": 1.0, "tgz": 0.7, "restic": 0.7, "host-zstd": 0.7, "volsafe-s3": 0.7}
    backups = sum(per.get(k, 0) for k in keys) + 0.7 * n_volsafe * ("volsafe" in keys)
    return int(size_bytes * (2 + backups)) + 2 * 10**9


def backup_all(ctx: C.Ctx, order: list[C.Contender], src: str, mount: str, outdir: str, label: str, backups: dict[int, dict]) -> None:
    """Each contender backs up ``src`` into ``outdir``; the results go into ``backups`` (by contender id) as they come."""
    for c in order:
        log(f"{label}: {c.backup_name}")
        backups[id(c)] = c.backup(ctx, src, mount, outdir)


def restore_all(
    ctx: C.Ctx, order: list[C.Contender], backups: dict[int, dict], label: str, verify: str | None, sampled: bool, discard: bool
) -> dict[str, dict]:
    """Each contender restores its backup into a fresh volume (removed right after; with ``discard``, its
    backup too). The volume is created inside the timed command or before it, the same for every
    contender (``ctx.target``). With ``verify``, each restored tree is checked against the source."""
    res: dict[str, dict] = {}
    for i, c in enumerate(order):
        vol = new_volume_name(f"{label}-{c.key}-{i}")
        m = create_volume(vol) if ctx.target == "outside" else None
        log(f"{label}: {c.restore_name} -> {vol}")
        try:
            res[c.restore_name] = r = c.restore(ctx, backups[id(c)], vol, m)
            r["target"] = ctx.target
            if verify is not None:
                fp = D.fingerprint(vol, ctx.image, sampled)
                r["verified"] = fp == verify
                if fp != verify:
                    log(f"WARNING: {c.restore_name} restored a tree that differs from the source: {fp} != {verify}")
        finally:
            remove_volume(vol)
            if discard:
                C.discard_quietly(ctx, c, backups.pop(id(c)))
    return res


def discard_all(ctx: C.Ctx, contenders: list[C.Contender], backups: dict[int, dict]) -> None:
    for c in contenders:
        if id(c) in backups:
            C.discard_quietly(ctx, c, backups.pop(id(c)))


def one_round(
    ctx: C.Ctx, contenders: list[C.Contender], src: str, mount: str, label: str, k: int, verify: str | None, sampled: bool
) -> dict[str, dict]:
    """All backups of ``src``, then each restore into a fresh volume (removed right after). Keyed by row name."""
    outdir = new_dir(ctx.workdir, f"{label}-")
    order = C.rotate(contenders, k)
    backups: dict[int, dict] = {}
    try:
        backup_all(ctx, order, src, mount, outdir, label, backups)
        res = {c.backup_name: backups[id(c)] for c in order}
        res.update(restore_all(ctx, order, backups, label, verify, sampled, discard=True))
    finally:
        discard_all(ctx, contenders, backups)
        shutil.rmtree(outdir, ignore_errors=True)
    return res


def restore_rounds(
    ctx: C.Ctx, contenders: list[C.Contender], src: str, mount: str, name: str, rounds_n: int, verify: str | None, sampled: bool, warmup: bool
) -> tuple[dict[str, dict], dict[str, dict], list[dict[str, dict]]]:
    """--restore-only: one backup per contender, then the warm-up restores and ``rounds_n`` rounds of
    restores of those same backups, interleaved (the order rotates each round). Returns the backup
    runs, the warm-up restores and the rounds, keyed by row name."""
    outdir = new_dir(ctx.workdir, f"{name}-")
    backups: dict[int, dict] = {}
    try:
        backup_all(ctx, contenders, src, mount, outdir, f"{name}-backup", backups)
        made = {c.backup_name: dict(backups[id(c)]) for c in contenders}
        warm = restore_all(ctx, contenders, backups, f"{name}-warmup", verify, sampled, discard=False) if warmup else {}
        rounds = []
        for i in range(rounds_n):
            order = C.rotate(contenders, i + 1)
            rounds.append(restore_all(ctx, order, backups, f"{name}-r{i + 1}", None, sampled, discard=False))
            log(f"{name} round {i + 1}: " + ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in rounds[-1].items()))
    finally:
        discard_all(ctx, contenders, backups)
        shutil.rmtree(outdir, ignore_errors=True)
    return made, warm, rounds


def bench_dataset(name: str, args, ctx: C.Ctx, keys: list[str], levels: list[int | None], rounds_n: int) -> dict:
    contenders = C.make_contenders(keys, levels)
    if "volsafe-s3" in keys and ctx.s3 is None:
        ctx.s3 = C.MotoServer(ctx.workdir)
        log(f"moto S3 server on {ctx.s3.endpoint}")
    sampled = name == "big"
    items = D.entries(name, seed=args.seed, size_mb=args.size_mb, n_files=args.small_files, size_gb=args.big_gb)
    nominal = {"mixed": args.size_mb * MB, "small": args.small_files * 2300, "big": int(args.big_gb * 1000 * MB)}[name]
    need, free = (
        disk_needed(nominal, keys, len(levels)),
        shutil.disk_usage("/var/lib/docker" if os.path.isdir("/var/lib/docker") else ctx.workdir).free,
    )
    if need > free:
        raise RuntimeError(f"{name}: needs about {need / 1e9:.0f} GB of disk, {free / 1e9:.0f} GB free")

    src = new_volume_name(f"{name}-src")
    log(f"{name}: generating into volume {src}")
    t = time.perf_counter()
    stats = D.generate_into_volume(src, ctx.image, items)
    gen_s = time.perf_counter() - t
    log(f"{name}: generated {stats['total']['bytes'] / MB:.0f} MB, {stats['total']['files']} files in {gen_s:.1f} s")
    mount = mountpoint(src)
    try:
        verify = None
        if not args.no_verify and not args.no_warmup:
            verify = D.fingerprint(src, ctx.image, sampled)
            log(f"{name}: source fingerprint{' (sampled)' if sampled else ''}: {verify}")
        made: dict[str, dict] = {}
        if args.restore_only:
            made, warm, rounds = restore_rounds(ctx, contenders, src, mount, name, rounds_n, verify, sampled, not args.no_warmup)
        else:
            warm = one_round(ctx, contenders, src, mount, f"{name}-warmup", 0, verify, sampled) if not args.no_warmup else {}
            rounds = []
            for i in range(rounds_n):
                rounds.append(one_round(ctx, contenders, src, mount, f"{name}-r{i + 1}", i + 1, None, sampled))
                log(f"{name} round {i + 1}: " + ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in rounds[-1].items()))
    finally:
        remove_volume(src)
    if ctx.removals is not None:
        ctx.removals.annotate([*made.values(), *warm.values(), *(v for r in rounds for v in r.values())])

    first = made or rounds[0]
    tar_bytes = (
        first.get(R.FLOOR_BACKUP, {}).get("stored_size")
        or next((v["tar_size"] for v in first.values() if "tar_size" in v), None)
        or stats["total"]["bytes"]
    )
    backup_order = [("backup", c.backup_name) for c in contenders]
    restore_order = [("restore", c.restore_name) for c in contenders]
    if made:  # the one backup per contender, then the restore rounds
        summary = R.summarize([made], backup_order, tar_bytes) + R.summarize(rounds, restore_order, tar_bytes)
    else:
        summary = R.summarize(rounds, backup_order + restore_order, tar_bytes)
    return {
        "stats": stats,
        "tar_bytes": tar_bytes,
        "generate_s": gen_s,
        "rounds": rounds_n,
        "warmup": bool(warm),
        "sampled": sampled,
        "contenders": keys,
        "order": backup_order + restore_order,
        "restore_only": bool(made),
        "backup_runs": made,
        "summary": summary,
        "verified": {k: v["verified"] for k, v in warm.items() if "verified" in v},
        "loads": [run["load_before"] for r in rounds for run in r.values()],
        "warmup_runs": warm,
        "round_runs": rounds,
    }


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "missing"


def write_outputs(args, meta: dict, results: dict[str, dict]) -> None:
    summaries = {name: ds["summary"] for name, ds in results.items()}
    targets = R.check_targets(summaries, meta["primary_backup"], meta["primary_restore"])
    md = R.markdown(meta, results, targets)
    print(md)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(md)
    written = [args.results]
    if not args.no_chart:
        Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
        git = meta.get("git_head", "?") + (" (uncommitted changes)" if " " in meta["git"] else "")
        R.chart(
            args.chart,
            results,
            title=f"{meta['command']}\nvolsafe {meta['volsafe_version']} at {git} · {meta['date']} · {meta['cpus']} CPUs · medians of wall time",
        )
        written.append(args.chart)
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "datasets": results, "targets": targets}, indent=1) + "\n")
    written.append(str(out))
    log("wrote " + ", ".join(written))


@cleans_up
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--datasets", type=lambda s: parse_list(s, D.DATASETS), default=list(D.DATASETS), help="data sets to run, in order [mixed,small,big]"
    )
    p.add_argument(
        "--contenders",
        type=lambda s: parse_list(s, C.ALL_KEYS),
        default=list(C.DEFAULT_KEYS),
        help=f"contenders for mixed and small [{','.join(C.DEFAULT_KEYS)}]",
    )
    p.add_argument(
        "--big-contenders",
        type=lambda s: parse_list(s, C.ALL_KEYS),
        default=list(C.BIG_DEFAULT_KEYS),
        help=f"contenders for the big set [{','.join(C.BIG_DEFAULT_KEYS)}]",
    )
    p.add_argument("--rounds", type=int, default=3, help="measured rounds for mixed and small [3]")
    p.add_argument("--big-rounds", type=int, default=1, help="measured rounds for the big set [1]")
    p.add_argument("--size-mb", type=int, default=600, help="mixed set size in MB (10^6 bytes) [600]")
    p.add_argument("--small-files", type=int, default=200_000, help="number of files in the small set [200000]")
    p.add_argument("--big-gb", type=float, default=10, help="big set size in GB (10^9 bytes) [10]")
    p.add_argument(
        "--levels", default=None, help="volsafe --level values, one volsafe row each, e.g. 1,3,default [volsafe's default]; S3 uses the first"
    )
    p.add_argument("--level", type=int, default=None, help="shorthand for --levels N")
    p.add_argument("--threads", type=int, default=None, help="volsafe --threads passthrough [volsafe's default]")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: mixed 50 MB, 5000 small files, big 0.3 GB, 1 round; outputs go to bench/out/quick-*"
    )
    p.add_argument("--seed", type=int, default=1, help="data set seed [1]")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"helper image for the recipes and generators [{DEFAULT_IMAGE}]")
    p.add_argument("--workdir", default=None, help="parent of the temp dir for backups [system temp dir]")
    p.add_argument(
        "--drop-caches",
        action="store_true",
        help="before every timed run: sync, then echo 3 > /proc/sys/vm/drop_caches (root; disturbs the whole machine), so every run reads cold",
    )
    p.add_argument(
        "--target",
        choices=C.TARGETS,
        default="inside",
        help="create each restore's fresh volume inside the timed command (every contender) or before the timer (every contender) [inside]",
    )
    p.add_argument(
        "--no-durable",
        action="store_true",
        help="stop each timer when the command exits; by default a sync after it is timed too, so that every contender's writes are on disk",
    )
    p.add_argument(
        "--restore-only",
        action="store_true",
        help="back up once per contender and data set, then time only the restores of those backups (rounds, warm-up as usual)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up round (and with it the fidelity check)")
    p.add_argument("--no-verify", action="store_true", help="skip checking the warm-up restores against the source")
    p.add_argument("--no-chart", action="store_true", help="do not write the PNG chart")
    p.add_argument("--results", default=None, help="markdown output [bench/results.md]")
    p.add_argument("--json-out", default=None, help="raw output [bench/out/results.json]")
    p.add_argument("--chart", default=None, help="PNG chart [docs/benchmark.png]")
    p.add_argument("--report-only", action="store_true", help="re-render table and chart from --json-out; no runs")
    args = p.parse_args(argv)
    args.command_line = "python3 bench/run.py" + "".join(" " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.quick:
        explicit = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")}
        for k, v in QUICK.items():
            if "--" + k.replace("_", "-") not in explicit:
                setattr(args, k, v)
    prefix = "quick-" if args.quick else ""
    args.results = args.results or str(HERE / "out" / "quick-results.md" if args.quick else HERE / "results.md")
    args.json_out = args.json_out or str(HERE / "out" / f"{prefix}results.json")
    args.chart = args.chart or str(HERE / "out" / "quick-benchmark.png" if args.quick else ROOT / "docs" / "benchmark.png")
    if min(args.rounds, args.big_rounds, args.size_mb, args.small_files) < 1 or args.big_gb <= 0:
        p.error("--rounds, --big-rounds, --size-mb, --small-files and --big-gb must be positive")
    try:
        levels = parse_levels(str(args.level) if args.level is not None else args.levels)
    except ValueError:
        p.error("--levels takes integers or 'default', comma-separated")
    if not args.no_chart:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error("the chart needs matplotlib: pip install -e '.[bench]' (or pip install 'matplotlib>=3.7'), or run with --no-chart")

    if args.drop_caches and not os.access(DROP_CACHES, os.W_OK):
        p.error(f"--drop-caches writes {DROP_CACHES}: run as root")
    if args.report_only:
        saved = json.loads(Path(args.json_out).read_text())
        write_outputs(args, saved["meta"], saved["datasets"])
        return 0

    keys_for = {name: (args.big_contenders if name == "big" else args.contenders) for name in args.datasets}
    missing = C.check_tools(C.make_contenders(sorted({k for ks in keys_for.values() for k in ks}), levels))
    if missing:
        p.error("missing tools: " + "; ".join(missing))

    token = new_token()
    started = time.perf_counter()
    git_at_start = git_state()
    docker("image", "inspect", args.image)
    workdir = new_dir(args.workdir, f"volsafe-bench-{token}-")
    ctx = C.Ctx(args.image, workdir, args.threads, drop_caches=args.drop_caches, target=args.target, durable=not args.no_durable)
    ctx.removals = VolumeRemovals()
    results: dict[str, dict] = {}
    for name in args.datasets:
        rounds_n = args.big_rounds if name == "big" else args.rounds
        t = time.perf_counter()
        results[name] = bench_dataset(name, args, ctx, keys_for[name], levels, rounds_n)
        results[name]["dataset_runtime_s"] = time.perf_counter() - t
        log(f"{name}: done in {results[name]['dataset_runtime_s']:.0f} s")

    primary = C.Volsafe(levels[0])
    versions = {}
    try:
        from importlib.metadata import version

        for pkg in ("volsafe", "zstandard", "docker", "boto3", "moto"):
            try:
                versions[pkg] = version(pkg)
            except Exception:  # noqa: BLE001
                versions[pkg] = "?"
    except ImportError:
        pass
    git_end = git_state()
    meta = {
        "command": args.command_line,
        "git": git_at_start if git_at_start == git_end else f"changed during the run: {git_at_start} -> {git_end}",
        "git_head": git_at_start.split(" ")[0],
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "volsafe_version": versions.get("volsafe", "?"),
        "package_versions": versions,
        "tools": {"restic": _version(["restic", "version"]), "zstd": _version(["zstd", "--version"]), "tar": _version(["tar", "--version"])},
        "docker_version": docker("version", "--format", "{{.Server.Version}}").strip(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "image": args.image,
        "seed": args.seed,
        "levels": levels,
        "threads": args.threads,
        "drop_caches": args.drop_caches,
        "durable": not args.no_durable,
        "target": args.target,
        "restore_only": args.restore_only,
        "primary_backup": primary.backup_name,
        "primary_restore": primary.restore_name,
        "rss_tool": ctx.gnu_time or "getrusage(RUSAGE_CHILDREN)",
        "loads": [x for ds in results.values() for x in ds["loads"]],
        "loadavg_end": os.getloadavg(),
        "total_runtime_s": time.perf_counter() - started,
    }
    write_outputs(args, meta, results)
    log(f"total {meta['total_runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
