#!/usr/bin/env python3
"""Benchmark ``volsafe migrate`` (direct) against backup + restore through a local directory.

    python3 bench/migrate.py [--size-mb 600] [--rounds 2]

Both move the same ~600 MB data set (the suite's ``mixed`` set, see bench/datasets.py) from the default
daemon to a second dockerd that this script starts (own data root, exec root, pidfile and unix
socket under /tmp; stopped and removed at the end). Each round runs, in alternating order:

  direct:  volsafe migrate SRC --to-host unix://…second… --to-volume NEW
  via dir: volsafe backup SRC --to DIR  then  volsafe --host unix://…second… restore ID --from DIR

Wall time is measured from the host around each volsafe process. The first direct result is checked
against the source (contents, sizes, owners, modes, mtimes). Prints a markdown table of medians and
writes it to bench/migrate-results.md. Every volume, directory and daemon it creates is removed, also
on failure, Ctrl-C and SIGTERM (bench/common.py's clean-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python3 bench/migrate.py` from anywhere

from bench import contenders as C  # noqa: E402
from bench import datasets as D  # noqa: E402
from bench.common import (DEFAULT_IMAGE, HERE, MB, State, cleans_up, docker, log,  # noqa: E402
                          new_dir, new_token, new_volume_name, run, stop)


def start_second_daemon(root: Path) -> tuple[subprocess.Popen, str]:
    """Start a second dockerd under ``root``; return the process and its unix:// URL once it answers.

    It is registered for cleanup(), which stops it even if we are interrupted while it starts."""
    url = f"unix://{root}/docker.sock"
    with open(root / "dockerd.log", "wb") as log_file:
        proc = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "x"), "--pidfile", str(root / "pid"),
             "-H", url, "--iptables=false", "--ip-masq=false", "--bridge=none"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    State.procs.append(proc)
    deadline = time.monotonic() + 90
    while subprocess.run(["docker", "-H", url, "version"], capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"second dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
        time.sleep(0.3)
    return proc, url


@contextlib.contextmanager
def docker_host(url: str):
    """Point the suite's ``docker`` calls (e.g. D.fingerprint) at another daemon for a while."""
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = url
    try:
        yield
    finally:
        if old is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = old


@cleans_up
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=600)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--results", default=str(HERE / "migrate-results.md"))
    args = p.parse_args()
    if args.rounds < 1 or args.size_mb < 1:
        p.error("--rounds and --size-mb must be at least 1")

    token = new_token()
    daemon = None
    try:
        root = Path(new_dir("/tmp", "vsbm-"))  # short: a unix socket path is limited to 107 bytes
        workdir = new_dir(None, f"volsafe-bench-migrate-{token}-")
        daemon, url = start_second_daemon(root)
        ctx = C.Ctx(args.image, workdir)
        run([*ctx.volsafe, "--host", url, "helper-image", "build", "--tag", args.image], env=ctx.env)

        src = new_volume_name("src")
        log(f"generating ~{args.size_mb} MB into {src}")
        dataset = D.generate_into_volume(src, args.image, D.mixed_entries(args.size_mb, args.seed))
        expected = D.fingerprint(src, args.image)

        results: dict[str, list[float]] = {"direct": [], "via dir": []}
        verified = None
        tar_size = None
        for i in range(args.rounds):
            order = ["direct", "via dir"] if i % 2 == 0 else ["via dir", "direct"]
            for kind in order:
                # On the second daemon, whose data root goes with it; removed after each run to free the disk.
                target = f"vsbench-{token}-dst-{i}-{kind.replace(' ', '')}"
                try:
                    if kind == "direct":
                        r = ctx.timed([*ctx.volsafe, "migrate", src, "--to-host", url, "--to-volume", target, "--json"],
                                      env=ctx.env)
                        out = json.loads(r["stdout"])
                        assert out["verified"], out
                        tar_size = out["bytes"]
                        seconds = r["seconds"]
                        if verified is None:
                            with docker_host(url):
                                verified = D.fingerprint(target, args.image) == expected
                    else:
                        d = new_dir(workdir, "via-dir-")
                        b = ctx.timed([*ctx.volsafe, "backup", src, "--to", d, "--json"], env=ctx.env)
                        backup_id = json.loads(b["stdout"])[0]["id"]
                        rs = ctx.timed([*ctx.volsafe, "--host", url, "restore", backup_id, "--from", d,
                                        "--to-volume", target, "--json"], env=ctx.env)
                        seconds = b["seconds"] + rs["seconds"]
                        shutil.rmtree(d, ignore_errors=True)
                    results[kind].append(seconds)
                    log(f"round {i + 1}: {kind} {seconds:.2f} s")
                finally:
                    docker("-H", url, "volume", "rm", "-f", target, check=False)

        med = {k: statistics.median(v) for k, v in results.items()}
        lines = [
            "# volsafe migrate benchmark",
            "",
            f"{time.strftime('%Y-%m-%d %H:%M %Z')} · {os.cpu_count()} CPUs · data set {dataset['total']['bytes'] / MB:.0f} MB "
            f"({dataset['total']['files']} files), {tar_size / MB:.0f} MB as tar · two daemons on this machine · "
            f"median of {args.rounds} rounds, alternating order, warm page cache",
            "",
            "| how | median s | runs s | MB/s |",
            "|---|---:|---|---:|",
        ]
        for kind, label in (("direct", "volsafe migrate (direct, verified)"),
                            ("via dir", "volsafe backup + restore through a local directory")):
            lines.append(f"| {label} | {med[kind]:.2f} | {', '.join(f'{s:.2f}' for s in results[kind])} | "
                         f"{tar_size / MB / med[kind]:.0f} |")
        lines += ["", f"Direct migration result checked against the source: {'ok' if verified else 'MISMATCH'}. "
                      f"Direct is {'no slower' if med['direct'] <= med['via dir'] else 'SLOWER'} than backup + restore "
                      f"({med['direct'] / med['via dir']:.2f}x).", ""]
        md = "\n".join(lines)
        print(md)
        Path(args.results).write_text(md)
        return 0 if verified else 1
    finally:
        # Before cleans_up's cleanup(): dockerd may need longer than its 10 s to shut down cleanly.
        if daemon is not None:
            stop(daemon, grace=30)


if __name__ == "__main__":
    sys.exit(main())
