"""Exec hooks: commands run inside application containers before and after a volume's archive.

A hook comes from labels on a container that mounts the volume::

    volsafe.hook.pre      = "pg_dump -U postgres -f /var/lib/postgresql/data/dump.sql app"
    volsafe.hook.post     = "rm -f /var/lib/postgresql/data/dump.sql"
    volsafe.hook.timeout  = "5m"          # each command; default 300 s
    volsafe.hook.on_error = "continue"    # a failing pre-hook does not abort the backup

or from a job's ``pre_hook``, ``post_hook``, ``hook_container``, ``hook_timeout``, ``hook_on_error``.
Commands run with ``sh -c`` in that container (which must be running), like ``docker exec``.

Semantics: pre-hooks run in order before the containers are stopped or paused; a failing one
aborts the backup unless its ``on_error`` is ``continue``. Once any pre-hook has run, every hook's
post command runs after the archive (or after the failure), whatever happened. Output goes to the
log (logger ``volsafe.hooks``), line by line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

from backup.docker.host import DockerHost, docker_errors
from backup.errors import VolsafeError
from backup.docker.helper import read_frames
from backup.jobs.schedule import parse_duration

log = logging.getLogger("volsafe.hooks")

PRE_LABEL = "volsafe.hook.pre"
POST_LABEL = "volsafe.hook.post"
TIMEOUT_LABEL = "volsafe.hook.timeout"
ON_ERROR_LABEL = "volsafe.hook.on_error"
DEFAULT_TIMEOUT = 300.0
ON_ERROR = ("abort", "continue")
_TAIL = 4096  # bytes of output kept for the error message


class HookFailed(VolsafeError):
    """A hook exited non-zero, timed out, or could not be run."""


@dataclass(frozen=True)
class HookSpec:
    """Commands to run in ``container`` (a name or id) before and after the archive."""

    container: str
    pre: str | None = None
    post: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    on_error: str = "abort"  # of the pre-hook: "abort" the backup, or "continue"
    source: str = "config"  # where it was declared, for messages


def hooks_from_labels(container: str, labels: Mapping[str, str]) -> HookSpec | None:
    """Return the hook declared by ``labels`` of ``container``, or None if it declares none.

    Raises VolsafeError for an invalid timeout or on_error value.
    """
    pre, post = labels.get(PRE_LABEL) or None, labels.get(POST_LABEL) or None
    if pre is None and post is None:
        return None
    timeout = DEFAULT_TIMEOUT
    if labels.get(TIMEOUT_LABEL):
        try:
            timeout = parse_duration(labels[TIMEOUT_LABEL])
        except ValueError as exc:
            raise VolsafeError(f"container {container}: label {TIMEOUT_LABEL}: {exc}") from None
    on_error = (labels.get(ON_ERROR_LABEL) or "abort").strip().lower()
    if on_error not in ON_ERROR:
        raise VolsafeError(f"container {container}: label {ON_ERROR_LABEL} must be abort or continue, not {on_error!r}")
    return HookSpec(container, pre, post, timeout, on_error, source=f"labels of {container}")


class HookRun:
    """The hooks of one backup: ``pre`` before quiescing, ``post`` after the archive (always, once ``pre`` began)."""

    def __init__(self, host: DockerHost, specs: Iterable[HookSpec], volume: str):
        self.host = host
        self.specs = list(specs)
        self.volume = volume
        self.attempted: list[HookSpec] = []  # whose post must run
        self.succeeded: list[HookSpec] = []  # whose pre command ran and exited 0
        self.posted = False

    def pre(self) -> None:
        """Run every pre-hook in order. Raises HookFailed for a failing one whose on_error is abort."""
        for spec in self.specs:
            self.attempted.append(spec)
            if spec.pre is None:
                continue
            try:
                run_hook(self.host, spec.container, spec.pre, spec.timeout, f"pre-hook of {self.volume}")
            except HookFailed as exc:
                if spec.on_error != "continue":
                    raise
                log.warning("%s (on_error = continue: the backup goes on)", exc)
                continue
            self.succeeded.append(spec)

    def post(self) -> list[str]:
        """Run the post-hooks of every spec whose pre phase was reached, once; return one line per failure."""
        if self.posted:
            return []
        self.posted = True
        problems = []
        for spec in self.attempted:
            if spec.post is None:
                continue
            try:
                run_hook(self.host, spec.container, spec.post, spec.timeout, f"post-hook of {self.volume}")
            except HookFailed as exc:
                problems.append(str(exc))
        return problems


def run_hook(host: DockerHost, container: str, command: str, timeout: float, what: str) -> None:
    """Run ``sh -c command`` in ``container``, logging its output; return when it exited 0.

    Raises HookFailed if it exits non-zero, runs past ``timeout`` seconds (it is then killed, when
    the daemon runs on this host), or cannot be started (e.g. the container is not running).
    """
    label = f"{what} in {container}"
    log.info("%s: running %s", label, command)
    api = host.api
    try:
        with docker_errors(host):
            exec_id = api.exec_create(container, ["sh", "-c", command], stdout=True, stderr=True)["Id"]
            attached = api.exec_start(exec_id, socket=True)
    except VolsafeError as exc:
        raise HookFailed(f"{label} could not run: {exc}") from None
    sock = getattr(attached, "_sock", attached)  # docker-py wraps unix sockets in a SocketIO
    reader = _OutputLogger(sock, label)
    reader.start()
    try:
        reader.join(timeout)
        if reader.is_alive():
            _kill(host, exec_id)
            raise HookFailed(f"{label} timed out after {timeout:g}s: {command}")
        code = _exit_code(host, exec_id)
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
    if code != 0:
        tail = reader.last_line()
        raise HookFailed(f"{label} failed with exit code {code}{': ' + tail if tail else ''}")
    log.info("%s: done", label)


def _exit_code(host: DockerHost, exec_id: str, wait: float = 10.0) -> int:
    """Return the exit code of an exec whose output ended (it may take a moment to be reported)."""
    deadline = time.monotonic() + wait
    try:
        with docker_errors(host):
            while True:
                info = host.api.exec_inspect(exec_id)
                if not info.get("Running") or time.monotonic() > deadline:
                    code = info.get("ExitCode")
                    return int(code) if code is not None else -1
                time.sleep(0.05)
    except VolsafeError as exc:
        raise HookFailed(f"cannot tell how a hook ended: {exc}") from None


def _kill(host: DockerHost, exec_id: str) -> None:
    """Kill a timed-out hook. Docker has no call for that; its host pid works when the daemon is local."""
    try:
        with docker_errors(host):
            pid = int(host.api.exec_inspect(exec_id).get("Pid") or 0)
        if pid > 0 and host.url.startswith("unix://"):
            os.kill(pid, signal.SIGKILL)
            return
    except (VolsafeError, OSError):
        pass
    log.warning("could not kill a timed-out hook (exec %s); it may still run in its container", exec_id[:12])


class _OutputLogger(threading.Thread):
    """Reads a non-TTY exec stream (8-byte frame headers) and logs each line; keeps the last one."""

    def __init__(self, sock: socket.socket, label: str):
        super().__init__(daemon=True, name=f"hook-output:{label}")
        self.sock = sock
        self.label = label
        self.pending = b""
        self.tail = b""

    def run(self) -> None:
        try:
            for _stream, payload in read_frames(self.sock):
                self._feed(payload)
        except OSError:
            pass
        self._feed(b"\n")

    def _feed(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            text = line.decode(errors="replace").rstrip()
            if text:
                log.info("%s: %s", self.label, text)
                self.tail = line[-_TAIL:]
        self.pending = self.pending[-_TAIL:]

    def last_line(self) -> str:
        return self.tail.decode(errors="replace").strip()
