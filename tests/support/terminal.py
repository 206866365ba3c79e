"""Test helper: run the volsafe CLI with stdout and stderr on a pseudo-terminal, as a user at a
terminal does (the progress bar shows only there)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

CLI = "from backup.cli import main; main()"


def volsafe_on_terminal(args: list[str], env: dict, *, program: str = CLI, timeout: float = 120) -> tuple[int, str]:
    """Run ``python -c program ARGS`` (the CLI, or a variant of it) with stdout and stderr on a
    pseudo-terminal; return (exit code, everything it wrote, decoded)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", program, *args], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env,
    )
    os.close(terminal)
    output = bytearray()
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        output += data
    os.close(controller)
    return proc.wait(timeout=timeout), output.decode(errors="replace")
