"""The backup progress bar has a total: percentage, ETA, bytes and entries (from a size scan in a
helper for a first backup, from the previous backup's manifest after that); silent with --json or a pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.support.terminal import volsafe_on_terminal
from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker

# The real CLI, with each stored chunk held back a little, so that a small test volume takes a few
# seconds to back up, as a big one does: long enough for the bar to show what it knows.
SLOW_CLI = """
import time
from storage_backends.local import LocalBackend
real_save = LocalBackend.save
def slow(chunks):
    for chunk in chunks:
        time.sleep(0.2)
        yield chunk
LocalBackend.save = lambda self, key, chunks: real_save(self, key, slow(chunks) if key.endswith(".tar.zst") else chunks)
from backup.cli import main
main()
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = re.compile(r"\b\d{1,3}%|[\d,]+/[\d,]+ entries|[\d.]+/[\d.?]+ [kMG]?B")  # what only the bar prints


def _on_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """Run the (slowed) CLI on a pseudo-terminal; return (exit code, output without ANSI codes)."""
    code, output = volsafe_on_terminal(args, env, program=SLOW_CLI)
    return code, ANSI.sub("", output)


def _size_helpers_created(docker_host, volume: str, since: float) -> int:
    events = docker_host.api.events(
        since=int(since) - 1, until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "create", "label": ["io.volsafe.role=size", f"io.volsafe.volume={volume}"]},
    )
    return len(list(events))


@pytest.fixture
def env(helper_image):
    return {**os.environ, "VOLSAFE_HELPER_IMAGE": helper_image, "COLUMNS": "200"}


def test_bar_has_a_total_and_percentage_from_a_scan_then_from_the_previous_backup(docker_host, helper_image, volumes, tmp_path, env):
    volume = volumes("total")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "mkdir /v/d && for i in $(seq 1 300); do echo $i > /v/d/f$i; done; "
                  "head -c 40m /dev/urandom > /v/blob")
    store = tmp_path / "store"

    started = time.time()
    code, shown = _on_terminal(["backup", volume, "--to", str(store)], env)
    assert code == 0, shown
    entries = json.loads(subprocess.run(
        [sys.executable, "-c", "from backup.cli import main; main()", "list", volume, "--from", str(store), "--json"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout)[0]["entries"]
    assert entries == 303  # ./, d/, 300 files, blob
    assert re.search(r"\b\d{1,3}%", shown), shown  # a percentage
    assert re.search(r"[\d.]+/[\d.]+ MB", shown), shown  # bytes done of a total, not "/?"
    assert f"/{entries} entries" in shown, shown  # the scan counted every entry
    assert "ETA " in shown
    assert _size_helpers_created(docker_host, volume, started) == 1

    # Next time the total comes from the previous backup's manifest: no scan, and its entry count
    # (not the 20 files added since) is the total shown.
    run_in_volume(docker_host, helper_image, volume, "for i in $(seq 1 20); do echo $i > /v/new$i; done")
    started = time.time()
    code, shown = _on_terminal(["backup", volume, "--to", str(store)], env)
    assert code == 0, shown
    assert f"/{entries} entries" in shown and re.search(r"\b\d{1,3}%", shown), shown
    assert _size_helpers_created(docker_host, volume, started) == 0


def test_silent_and_no_scan_with_json_or_a_pipe(docker_host, helper_image, volumes, tmp_path, env):
    volume = volumes("quiet")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "head -c 5m /dev/urandom > /v/blob")
    started = time.time()

    code, quiet = _on_terminal(["backup", volume, "--to", str(tmp_path / "a"), "--json"], env)
    assert code == 0, quiet
    assert not BAR.search(quiet) and "ETA" not in quiet and '"volume"' in quiet

    piped = subprocess.run(
        [sys.executable, "-c", SLOW_CLI, "backup", volume, "--to", str(tmp_path / "b")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert not BAR.search(piped.stderr) and "ETA" not in piped.stderr and "MB/s" not in piped.stderr
    assert _size_helpers_created(docker_host, volume, started) == 0  # nothing to show: nothing scanned
