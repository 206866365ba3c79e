"""Test helpers for programs on a pseudo-terminal: read what they write there (typing answers to
prompts) with a deadline, and run the volsafe CLI on one, as a user at a terminal does (the
progress bar shows only there)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from typing import Callable, Optional

CLI = "from backup.cli import main; main()"


def read_terminal(
    fd: int, deadline: float, *, respond: Optional[Callable[[bytes], Optional[bytes]]] = None, what: str = "the program"
) -> bytes:
    """Return all that is written to the pseudo-terminal ``fd`` until the program closes it.

    After each read, ``respond(everything so far)`` may return bytes to type in (an answer to a
    prompt). Raises TimeoutError, with what was read, if the terminal is still open at ``deadline``
    (a time.monotonic() value); stopping the program is the caller's.
    """
    seen = b""
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"{what} did not finish: {seen!r}")
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
        if respond is not None and (reply := respond(seen)) is not None:
            os.write(fd, reply)
    return seen


def volsafe_on_terminal(args: list[str], env: dict, *, program: str = CLI, timeout: float = 120) -> tuple[int, str]:
    """Run ``python -c program ARGS`` (the CLI, or a variant of it) with stdout and stderr on a
    pseudo-terminal; return (exit code, everything it wrote, decoded). Killed after ``timeout`` seconds."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", program, *args], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env,
    )
    os.close(terminal)
    try:
        output = read_terminal(controller, time.monotonic() + timeout, what="volsafe")
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(controller)
    return proc.wait(timeout=timeout), output.decode(errors="replace")
