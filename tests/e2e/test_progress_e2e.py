"""Progress bars: shown on a terminal (bytes and rate on stderr), silent with --json or a pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.terminal import CLI, volsafe_on_terminal
from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker


def test_progress_bar_on_a_terminal_only(docker_host, helper_image, volumes, tmp_path):
    volume = volumes("progress")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "head -c 150m /dev/urandom > /v/blob")
    env = {**os.environ, "VOLSAFE_HELPER_IMAGE": helper_image, "COLUMNS": "120"}

    code, shown = volsafe_on_terminal(["backup", volume, "--to", str(tmp_path / "a")], env)
    assert code == 0, shown
    assert f"backup {volume}" in shown and "MB/s" in shown  # the bar: what, bytes and rate

    code, quiet = volsafe_on_terminal(["backup", volume, "--to", str(tmp_path / "b"), "--json"], env)
    assert code == 0, quiet
    assert "MB/s" not in quiet and '"volume"' in quiet

    piped = subprocess.run(
        [sys.executable, "-c", CLI, "backup", volume, "--to", str(tmp_path / "c")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert piped.returncode == 0 and "MB/s" not in piped.stderr
