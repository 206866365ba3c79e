"""Crash recovery across pid namespaces: volsafe in a container and volsafe on the host share a
daemon (its helpers' labels), records and FIFO directories, but not pid numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from backup.quiesce.recovery import INIT_PID_NAMESPACE, owner_alive, pid_namespace, process_start_time

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0 or pid_namespace() != INIT_PID_NAMESPACE,
    reason="needs root in the initial pid namespace, and unshare",
)


def child_namespace_process() -> tuple[subprocess.Popen, int]:
    """Start ``sleep`` as pid 1 of a new pid namespace; return it and its pid as this namespace sees it."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sleep", "60"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if children and pid_namespace(children[0]) not in (None, pid_namespace()):
            return proc, int(children[0])
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no process in a new pid namespace")


def test_a_process_of_another_namespace_is_found_by_its_own_pid_from_the_initial_one():
    proc, host_pid = child_namespace_process()
    namespace, started = pid_namespace(host_pid), process_start_time(host_pid)
    try:
        assert owner_alive(1, started, namespace)  # pid 1 there, not this namespace's init
        assert not owner_alive(2, None, namespace)
        assert not owner_alive(1, "1", namespace)  # another process that got the same pid
    finally:
        os.kill(host_pid, 9)
        proc.wait(timeout=30)  # unshare waits for its child, then ends
    deadline = time.monotonic() + 10
    while owner_alive(1, started, namespace):
        assert time.monotonic() < deadline, "pid 1 of a dead namespace still counts as alive"
        time.sleep(0.05)


def test_inside_a_container_a_pid_of_another_namespace_is_never_taken_for_dead():
    """What a volsafe in a container sees of the host volsafe's helpers: a pid it cannot look up."""
    code = (
        "import sys; from backup.quiesce.recovery import owner_alive, pid_namespace, INIT_PID_NAMESPACE\n"
        "assert pid_namespace() != INIT_PID_NAMESPACE\n"
        "print(owner_alive(999999, None, INIT_PID_NAMESPACE), owner_alive(999999, None, pid_namespace()))\n"
    )
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


def test_without_ptrace_rights_a_process_of_another_namespace_is_never_taken_for_dead(monkeypatch):
    """A host volsafe without CAP_SYS_PTRACE (docs/volsafe.service drops it) cannot read a container
    process's namespace; it must not take a container volsafe's live helpers for orphans."""
    from backup.quiesce import recovery

    proc, host_pid = child_namespace_process()
    namespace, started = pid_namespace(host_pid), process_start_time(host_pid)
    own = pid_namespace()
    monkeypatch.setattr(recovery, "pid_namespace", lambda pid="self": own if pid == "self" else None)
    try:
        assert owner_alive(1, started, namespace)  # pid 1 of some namespace runs: cannot say it is dead
        assert not owner_alive(4_000_000, None, namespace)  # no process anywhere is numbered so: dead
    finally:
        os.kill(host_pid, 9)
        proc.wait(timeout=30)


def test_a_fifo_directory_appears_under_its_recovered_name_only_with_its_namespace_file(monkeypatch):
    """Crash recovery must never see a FIFO directory without its owner's namespace: a volsafe in
    another namespace would look the pid up among its own processes and could remove it."""
    import tempfile

    from backup.docker import fifo

    seen: list[tuple[str, bool]] = []
    real_mkfifo = os.mkfifo

    def watching_mkfifo(path, *args):
        root = os.path.dirname(path)
        for name in os.listdir(tempfile.gettempdir()):
            if fifo.fifo_dir_owner(name) is not None and os.path.join(tempfile.gettempdir(), name) == root:
                seen.append((name, os.path.exists(os.path.join(root, fifo.NAMESPACE_NAME))))
        return real_mkfifo(path, *args)

    monkeypatch.setattr(fifo.os, "mkfifo", watching_mkfifo)
    made = fifo.FifoDir()
    try:
        assert seen == []  # while being filled, it has a name recovery does not match
        assert fifo.fifo_dir_owner(os.path.basename(made.path)) == (os.getpid(), process_start_time(os.getpid()))
        assert sorted(os.listdir(made.path)) == sorted([fifo.ERRORS_NAME, fifo.FIFO_NAME, fifo.NAMESPACE_NAME, fifo.OWNER_NAME])
    finally:
        made.remove()
