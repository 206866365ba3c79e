"""Start-up benchmark: whole-process time of the commands where start-up is most of the work.

    python3 bench/startup.py [--rounds 9] [--baseline DIR] [--no-backup] [--image IMG]

Each round runs, in turn: the bare interpreter (``python3 -c pass``, the floor nothing can go
below), ``volsafe --version``, ``volsafe list --from EMPTY_DIR`` and ``volsafe backup EMPTY_VOLUME``
(to a local directory; needs the Docker daemon). With ``--baseline DIR`` (another checkout, e.g.
``git worktree add /tmp/main main``) every command also runs from that tree in the same round, right
after this one, so a before/after comparison sees the same machine load. Rounds are interleaved (not
all runs of one command, then the next) and the table shows medians: wall seconds and CPU seconds
(user + system of the finished child, which load on a shared machine inflates less than wall time).

Both trees are byte-compiled first, as ``pip install`` does: with PYTHONDONTWRITEBYTECODE set (as in
many CI and container set-ups) every run would otherwise compile every module again, and measure
that instead. The commands run as ``python3 -c 'from backup.cli import main; main()' ARGS`` with
the tree first on PYTHONPATH, the same code the ``volsafe`` console script runs, without a
pyenv shim or a virtualenv wrapper in front of it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"--version": 0.15, "list": 0.3, "backup": 0.45}  # issue 19, whole process, median wall seconds


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv`` to completion; return (wall seconds, CPU seconds of the child). Raises on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=env["HOME"])
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9, help="measured rounds, after one warm-up round [9]")
    p.add_argument("--baseline", type=Path, help="another checkout to measure in the same rounds")
    p.add_argument("--no-backup", action="store_true", help="leave out the empty-volume backup (no Docker needed)")
    p.add_argument("--image", default=os.environ.get("VOLSAFE_HELPER_IMAGE", "volsafe-helper:test"), help="helper image for the backup")
    args = p.parse_args(argv)

    trees = {"this tree": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    for tree in trees.values():
        for package in ("backup", "storage_backends"):
            compileall.compile_dir(str(tree / package), quiet=1)

    work = Path(tempfile.mkdtemp(prefix="volsafe-startup-"))
    (work / "empty-store").mkdir()
    volume = f"volsafe-startup-{uuid.uuid4().hex[:8]}"
    if not args.no_backup:
        subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
    cli = [sys.executable, "-c", "from backup.cli import main; main()"]
    commands = {"python3 -c pass": [sys.executable, "-c", "pass"], "--version": [*cli, "--version"],
                "list": [*cli, "list", "--from", str(work / "empty-store")]}
    if not args.no_backup:
        commands["backup"] = [*cli, "backup", volume, "--to", str(work / "store"), "--json"]
    base_env = {k: v for k, v in os.environ.items() if k not in ("VOLSAFE_CONFIG", "PYTHONPATH")}
    base_env.update(HOME=str(work), VOLSAFE_HELPER_IMAGE=args.image)  # no config file found: the defaults
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for k in range(args.rounds + 1):
            for name, command in commands.items():
                for label, tree in trees.items():
                    if name == "python3 -c pass" and label != "this tree":
                        continue
                    result = timed(command, {**base_env, "PYTHONPATH": str(tree)})
                    if k:  # round 0 warms the page cache and the daemon
                        runs.setdefault((name, label), []).append(result)
    finally:
        if not args.no_backup:
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)])

    load = os.getloadavg()[0]
    print(f"{args.rounds} rounds, medians; load average at the end {load:.2f} on {os.cpu_count()} CPUs\n")
    print("| command | tree | wall s | CPU s | target (wall) |")
    print("|---|---|---|---|---|")
    for (name, label), results in runs.items():
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        target = f"≤ {TARGETS[name]}" if name in TARGETS else "floor"
        print(f"| {name} | {label} | {wall:.3f} | {cpu:.3f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
