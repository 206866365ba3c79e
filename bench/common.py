"""Shared plumbing for the benchmark: logging, running commands, the per-run token and clean-up.

Everything the run creates (volumes, containers, directories, child processes such as the moto
server) is registered here and removed by :func:`cleanup`, which every benchmark's ``main`` runs on the way
out through the :func:`cleans_up` decorator. SIGTERM is turned into a ``KeyboardInterrupt`` so that
the same path runs on success, failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_IMAGE = os.environ.get("VOLSAFE_HELPER_IMAGE", "volsafe-helper:test")
BENCH_LABEL = "io.volsafe-bench.run"
MB = 1_000_000  # all sizes and rates are decimal megabytes
CMD_TIMEOUT = 3 * 3600


class State:
    """What the run created, for clean-up. Filled as we go, emptied by cleanup()."""

    token = ""
    volumes: list[str] = []
    dirs: list[str] = []
    procs: list[subprocess.Popen] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every finally block runs."""


def _on_sigterm(_signum, _frame):
    raise Terminated()


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


def cleans_up(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a benchmark's ``main``: SIGTERM acts like Ctrl-C, an interruption returns 130, and
    :func:`cleanup` removes what the run created on every way out."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        install_signal_handlers()
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            log("interrupted; cleaning up")
            return 130
        finally:
            cleanup()

    return run


def new_token() -> str:
    State.token = secrets.token_hex(3)
    return State.token


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


DROP_CACHES = "/proc/sys/vm/drop_caches"


def settle(drop_caches: bool = False) -> dict:
    """Flush dirty pages (untimed) so one run's writes and deletions are not billed to the next; with
    ``drop_caches``, then drop the page cache, dentries and inodes (``echo 3 > /proc/sys/vm/drop_caches``,
    root only) so that every run reads its input from disk. Returns the 1-minute load average after that
    (``load_before``) and how long the sync and the drop took (``sync_s``, ``drop_s``): a long sync means
    the previous run left writeback behind that an unsettled run would have paid for."""
    t = time.perf_counter()
    os.sync()
    out = {"sync_s": time.perf_counter() - t}
    if drop_caches:
        t = time.perf_counter()
        with open(DROP_CACHES, "w") as f:
            f.write("3\n")
        out["drop_s"] = time.perf_counter() - t
    out["load_before"] = os.getloadavg()[0]
    return out


def run(
    cmd: list[str], *, env: dict | None = None, stdin_data: bytes | None = None, check: bool = True, timeout: float = CMD_TIMEOUT
) -> tuple[float, str, str]:
    """Run ``cmd``; return (wall seconds, stdout, stderr). On Ctrl-C/SIGTERM the child is interrupted too."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = proc.communicate(stdin_data, timeout=timeout)
    except BaseException:
        stop(proc)
        raise
    elapsed = time.perf_counter() - start
    out_s, err_s = out.decode(errors="replace"), err.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err_s.strip()[-2000:]}")
    return elapsed, out_s, err_s


def stop(proc: subprocess.Popen, grace: float = 60) -> None:
    """Interrupt a child (volsafe and the docker CLI both clean up on SIGINT), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def docker(*args: str, check: bool = True) -> str:
    return run(["docker", *args], check=check, timeout=600)[1]


class VolumeRemovals:
    """The volumes other clients of this Docker daemon remove while the benchmark runs.

    The local volume driver deletes a volume's files while holding its lock: every volume call
    (create, inspect, even of another name) waits until that is done. Removing a volume of 50,000
    small files took 19 s here, and a `docker volume inspect` of another name issued meanwhile took
    18 s. On a shared daemon another session's removals can therefore stall any contender that makes
    a volume call inside its timer. This follows ``docker events`` for volume removals (an event comes
    when the removal is done) so that each run can say which foreign removals ended while it ran.
    """

    def __init__(self) -> None:
        import threading

        self.events: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            ["docker", "events", "--filter", "type=volume", "--filter", "event=destroy", "--format", "{{.TimeNano}} {{.Actor.ID}}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        State.procs.append(self.proc)
        threading.Thread(target=self._read, name="docker-events", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp, _, name = line.strip().partition(" ")
            if stamp.isdigit():
                self.events.append((int(stamp) / 1e9, name))

    def annotate(self, runs) -> None:
        """Set ``foreign_removals`` on every run dict (with ``started``/``ended``) in ``runs``."""
        time.sleep(0.5)  # let events of removals that ended with the last run arrive
        for r in runs:
            if "started" in r:
                r["foreign_removals"] = foreign_removals(self.events, r["started"], r["ended"], f"vsbench-{State.token}-")


def foreign_removals(events: list[tuple[float, str]], start: float, end: float, ours: str) -> list[str]:
    """Names of volumes, not starting with ``ours``, whose removal ended between ``start`` and ``end``:
    only those can have held the volume driver's lock while the run waited on it."""
    return [name for t, name in events if start <= t <= end and not name.startswith(ours)]


def new_volume_name(what: str) -> str:
    name = f"vsbench-{State.token}-{what}"
    State.volumes.append(name)
    return name


def container_name(what: str) -> str:
    return f"vsbench-{State.token}-{what}-{secrets.token_hex(3)}"


def label_args() -> list[str]:
    return ["--label", f"{BENCH_LABEL}={State.token}"]


def create_volume(name: str) -> str:
    """Create a labelled volume and return its mountpoint on this host."""
    docker("volume", "create", *label_args(), name)
    return mountpoint(name)


def mountpoint(volume: str) -> str:
    return docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume).strip()


def remove_volume(name: str) -> None:
    docker("volume", "rm", "-f", name, check=False)


def new_dir(parent: str | None, prefix: str) -> str:
    import tempfile

    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    State.dirs.append(d)
    return d


def dir_size(path: str) -> int:
    """Bytes in the regular files under ``path`` (apparent size)."""
    total = 0
    for base, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(base, f)).st_size
            except OSError:
                pass
    return total


def git_state() -> str:
    """The commit measured, and whether volsafe's code differed from it (others may edit while we run)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "backup", "storage_backends"], capture_output=True, text=True
        ).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
    except OSError:
        return "unknown"
    shown = ", ".join(dirty[:4]) + (f" and {len(dirty) - 4} more" if len(dirty) > 4 else "")
    return (head or "unknown") + (f" + uncommitted changes in {shown}" if dirty else "")


def cleanup() -> None:
    """Remove every process, container, volume and directory this run created. Never raises."""
    for proc in reversed(State.procs):
        try:
            stop(proc, grace=10)
        except Exception as exc:  # noqa: BLE001
            log(f"clean-up: {exc}")
    State.procs.clear()
    if not State.token:
        return
    # Our own containers (recipe, generator, fingerprint), then any volsafe helper still on our volumes.
    filters = [f"label={BENCH_LABEL}={State.token}"] + [f"label=io.volsafe.volume={v}" for v in State.volumes]
    for flt in filters:
        try:
            ids = docker("ps", "-aq", "--filter", flt, check=False).split()
            if ids:
                docker("rm", "-f", *ids, check=False)
        except Exception as exc:  # noqa: BLE001
            log(f"clean-up: {exc}")
    try:  # volsafe restore copies the source's labels, so restored volumes carry ours too
        labelled = docker("volume", "ls", "-q", "--filter", f"label={BENCH_LABEL}={State.token}", check=False).split()
    except Exception:  # noqa: BLE001
        labelled = []
    for vol in dict.fromkeys(State.volumes + labelled):
        try:
            remove_volume(vol)
        except Exception as exc:  # noqa: BLE001
            log(f"clean-up: {exc}")
    State.volumes.clear()
    for d in State.dirs:
        shutil.rmtree(d, ignore_errors=True)
    State.dirs.clear()


def machine_cpu_s() -> float:
    """CPU seconds that all of the machine's cores have spent busy since boot (``/proc/stat``: every
    state but idle and iowait). The difference around a run counts what a ``volsafe`` process's own
    rusage cannot: the helper container's tar, dockerd and the kernel's work for them."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq (not steal: the hypervisor's)
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
