#!/usr/bin/env python3
"""Benchmark backing up several small volumes at once (issue 8: "8 small volumes take clearly less
than 8 times one").

    python3 bench/concurrency.py [--volumes 8] [--size-mb 40] [--rounds 3] [--limits 1,2,4]

It fills ``--volumes`` volumes with a slice of the mixed data set each (deterministic, different
seeds), then, in interleaved rounds, times from the host:

  one:      volsafe backup VOL1 --to DIR
  all at N: volsafe backup VOL1 … VOLn --to DIR --concurrency N   for each N of --limits

and prints medians, with "all at N / one" beside each (8 means no gain at all). Writes the table
to bench/concurrency-results.md. Every volume and directory it makes is removed at the end, also
on failure, Ctrl-C and SIGTERM (bench.common's clean-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets  # noqa: E402
from bench.common import DEFAULT_IMAGE, HERE, cleans_up, log, new_dir, new_token, new_volume_name  # noqa: E402
from bench.contenders import Ctx  # noqa: E402


def _backup(ctx: Ctx, volumes: list[str], outdir: str, limit: int) -> float:
    target = new_dir(outdir, "b-")
    return ctx.timed([*ctx.volsafe, "backup", *volumes, "--to", target, "--json", "--concurrency", str(limit)], rusage=False)["seconds"]


@cleans_up
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--volumes", type=int, default=8)
    p.add_argument("--size-mb", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--limits", default="1,2,4")
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--results", default=str(HERE / "concurrency-results.md"))
    args = p.parse_args(argv)
    limits = [int(x) for x in args.limits.split(",")]
    new_token()
    outdir = new_dir(None, "volsafe-bench-conc-")
    ctx = Ctx(args.image, outdir)
    volumes = [new_volume_name(f"c{i}") for i in range(args.volumes)]
    for i, volume in enumerate(volumes):
        datasets.generate_into_volume(volume, args.image, datasets.mixed_entries(args.size_mb, seed=100 + i))
    log(f"{len(volumes)} volumes of ~{args.size_mb} MB ready")
    times: dict[str, list[float]] = {"one": [], **{f"all at {n}": [] for n in limits}}
    _backup(ctx, volumes[:1], outdir, 1)  # warm-up, untimed
    for r in range(args.rounds):
        times["one"].append(_backup(ctx, volumes[:1], outdir, 1))
        for n in limits if r % 2 == 0 else reversed(limits):
            times[f"all at {n}"].append(_backup(ctx, volumes, outdir, n))
        log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    one = statistics.median(times["one"])
    lines = [
        "# volsafe: several small volumes at once",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {os.cpu_count()} CPUs · {len(volumes)} volumes "
        f"of ~{args.size_mb} MB (mixed data) · median of {args.rounds} rounds · load {os.getloadavg()[0]:.1f}",
        "",
        "| command | median s | runs s | ÷ one volume |",
        "|---|---:|---|---:|",
    ]
    for key, runs in times.items():
        what = "backup of 1 volume" if key == "one" else f"backup of {len(volumes)} volumes, --concurrency {key.split()[-1]}"
        lines.append(f"| {what} | {statistics.median(runs):.2f} | {', '.join(f'{t:.2f}' for t in runs)} | {statistics.median(runs) / one:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
