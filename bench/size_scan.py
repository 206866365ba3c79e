"""What the progress bar's size scan costs (issue 18 item 14): ``python3 bench/size_scan.py``.

Makes two volumes (50,000 small files in 100 directories; 1 GB in 16 random files), then for each
times the scan alone in a read-only helper (start, command, removal) against two cheaper commands,
and a backup without a scan against one with it (what the scan adds, and how far in the total is
known). Everything it creates is removed, also on Ctrl-C. Needs VOLSAFE_HELPER_IMAGE (or
volsafe-helper:test) and a daemon.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backup.actions.backup import BackupOptions, run_backup  # noqa: E402
from backup.docker.helper import helper_session  # noqa: E402
from backup.docker.host import connect  # noqa: E402
from backup.docker.size_scan import SCAN_SCRIPT  # noqa: E402
from backup.progress import Reporter, Task  # noqa: E402
from storage_backends.local import LocalBackend  # noqa: E402
from tests.support.volume_tree import run_in_volume  # noqa: E402

IMAGE = os.environ.get("VOLSAFE_HELPER_IMAGE", "volsafe-helper:test")
DATA = {
    "50k small files": "cd /v && for d in $(seq 1 100); do mkdir d$d; (cd d$d && for f in $(seq 1 500); do "
                       "echo file-$d-$f-with-some-content-here > f$f; done); done",
    "1 GB in 16 files": "cd /v && for i in $(seq 1 16); do head -c 64m /dev/urandom > blob$i; done",
}
COMMANDS = {
    "find+stat+awk (used)": ["sh", "-c", SCAN_SCRIPT],
    "du -sb; find|wc -l": ["sh", "-c", "cd /volsafe/target && du -sb . && find . | wc -l"],
    "true (helper overhead)": ["true"],
}


class _Timed(Task):
    def __init__(self) -> None:
        self.started, self.known_after = time.monotonic(), None

    def set_total(self, size: int, entries: int | None = None) -> None:
        self.known_after = time.monotonic() - self.started


class _Scanning(Reporter):
    wants_totals = True

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None):
        self.last = _Timed()
        yield self.last


def main() -> None:
    host = connect()
    made = []
    try:
        for label, script in DATA.items():
            volume = f"vsbench-size-{secrets.token_hex(4)}"
            host.api.create_volume(volume)
            made.append(volume)
            run_in_volume(host, IMAGE, volume, script)
            for name, command in COMMANDS.items():
                for _ in range(2):
                    t0 = time.monotonic()
                    with helper_session(host, IMAGE, volume, role="size", writable=False, reads_all=True) as helper:
                        t1 = time.monotonic()
                        out = helper.exec(command).output.strip().replace("\n", " ")
                        t2 = time.monotonic()
                    print(f"{label:17} {name:24} {time.monotonic() - t0:5.2f} s (command {t2 - t1:5.2f} s) {out[:40]}", flush=True)
            for _ in range(2):
                for reporter in (Reporter(), _Scanning()):
                    with tempfile.TemporaryDirectory() as store:
                        t0 = time.monotonic()
                        run_backup(host, [volume], [LocalBackend(store)], BackupOptions(helper_image=IMAGE), reporter)
                        took = time.monotonic() - t0
                    known = getattr(getattr(reporter, "last", None), "known_after", None)
                    extra = f", total known after {known:.2f} s" if known is not None else (", no total before the end" if hasattr(reporter, "last") else "")
                    print(f"{label:17} backup {'with scan' if hasattr(reporter, 'last') else 'no scan  '} {took:6.2f} s{extra}", flush=True)
    finally:
        for volume in made:
            host.api.remove_volume(volume, force=True)
        print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
