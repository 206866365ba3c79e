#!/usr/bin/env python3
"""Benchmark ``volsafe migrate`` (direct) against backup + restore through a local directory.

    python3 bench/migrate.py [--size-mb 600] [--rounds 2]

Both move the same ~600 MB data set (the generator of bench/backup_restore.py) from the default
daemon to a second dockerd that this script starts (own data root, exec root, pidfile and unix
socket under /tmp; stopped and removed at the end). Each round runs, in alternating order:

  direct:  volsafe migrate SRC --to-host unix://…second… --to-volume NEW
  via dir: volsafe backup SRC --to DIR  then  volsafe --host unix://…second… restore ID --from DIR

Wall time is measured from the host around each volsafe process. The first direct result is checked
against the source (contents, sizes, owners, modes, mtimes). Prints a markdown table of medians and
writes it to bench/migrate-results.md. Every volume, directory and daemon it creates is removed, also
on failure and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import backup_restore as br  # noqa: E402 - the data generator and helpers

MB = br.MB


def start_second_daemon(root: Path) -> tuple[subprocess.Popen, str]:
    """Start a second dockerd under ``root``; return the process and its unix:// URL once it answers."""
    url = f"unix://{root}/docker.sock"
    log_file = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "x"), "--pidfile", str(root / "pid"),
         "-H", url, "--iptables=false", "--ip-masq=false", "--bridge=none"],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while subprocess.run(["docker", "-H", url, "version"], capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"second dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
        time.sleep(0.3)
    return proc, url


def stop_daemon(proc: subprocess.Popen) -> None:
    """Stop the second dockerd (SIGTERM, then SIGKILL after 30 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=600)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--image", default=br.DEFAULT_IMAGE)
    p.add_argument("--results", default=str(HERE / "migrate-results.md"))
    args = p.parse_args()

    signal.signal(signal.SIGTERM, br._on_sigterm)
    br._run_token = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="vsbm-", dir="/tmp"))
    workdir = tempfile.mkdtemp(prefix=f"volsafe-bench-migrate-{br._run_token}-")
    br._created_dirs.append(workdir)
    daemon = None
    try:
        daemon, url = start_second_daemon(root)
        bench = br.Bench(args, args.image, workdir)
        br.run([*bench.volsafe, "--host", url, "helper-image", "build", "--tag", args.image], env=bench.env)

        src = br.new_volume_name("src")
        br.log(f"generating ~{args.size_mb} MB into {src}")
        dataset = br.generate_into_volume(src, args.image, args.size_mb, args.seed)
        expected = br.fingerprint(src, args.image)

        results: dict[str, list[float]] = {"direct": [], "via dir": []}
        verified = None
        tar_size = None
        for i in range(args.rounds):
            order = ["direct", "via dir"] if i % 2 == 0 else ["via dir", "direct"]
            for kind in order:
                target = f"vsbench-{br._run_token}-dst-{i}-{kind.replace(' ', '')}"
                try:
                    if kind == "direct":
                        r = bench._volsafe(["migrate", src, "--to-host", url, "--to-volume", target, "--json"])
                        out = json.loads(r["stdout"])
                        assert out["verified"], out
                        tar_size = out["bytes"]
                        seconds = r["seconds"]
                        if verified is None:
                            fp = br.run(["docker", "-H", url, "run", "--rm", "--network", "none", "-v", f"{target}:/data:ro",
                                         args.image, "sh", "-c", br.FINGERPRINT])[1]
                            verified = " ".join(fp.split()) == expected
                    else:
                        d = tempfile.mkdtemp(dir=workdir)
                        b = bench._volsafe(["backup", src, "--to", d, "--json"])
                        backup_id = json.loads(b["stdout"])[0]["id"]
                        rs = bench._volsafe(["--host", url, "restore", backup_id, "--from", d, "--to-volume", target, "--json"])
                        seconds = b["seconds"] + rs["seconds"]
                        shutil.rmtree(d, ignore_errors=True)
                    results[kind].append(seconds)
                    br.log(f"round {i + 1}: {kind} {seconds:.2f} s")
                finally:
                    subprocess.run(["docker", "-H", url, "volume", "rm", "-f", target], capture_output=True)

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
    except KeyboardInterrupt:
        br.log("interrupted; cleaning up")
        return 130
    finally:
        br.cleanup(args.image)
        if daemon is not None:
            stop_daemon(daemon)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
