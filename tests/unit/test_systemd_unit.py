"""docs/volsafe.service is a unit systemd accepts: ``systemd-analyze verify`` (where it is installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.required import skip_or_fail

UNIT = Path(__file__).resolve().parents[2] / "docs" / "volsafe.service"


def test_unit_verifies_and_runs_volsafe_run(tmp_path):
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("no systemd-analyze here (Debian's systemd package)")
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/volsafe run\n" in text
    # verify insists that ExecStart exists: point it at this Python, which exists everywhere.
    checked = tmp_path / "volsafe.service"
    checked.write_text(text.replace("ExecStart=/usr/local/bin/volsafe run", f"ExecStart={sys.executable} -m backup.cli run"))
    done = subprocess.run(["systemd-analyze", "verify", str(checked)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
