"""Crash recovery by a restarted volsafe container: same container, new pid namespace. What the
dead run left (quiesce and write records, helper containers, FIFO directories) must be taken for a
dead owner's; what another container, an unknown one or an old record left must not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from backup.quiesce import recovery
from backup.quiesce.recovery import INIT_PID_NAMESPACE, pid_namespace, process_start_time

OLD_RUN = "pid:[4026599991]"  # the namespace of the container's previous run (gone)
THIS_RUN = "pid:[4026599992]"  # the namespace volsafe runs in now
ME = "docker/" + "a" * 64
BOOT = open("/proc/sys/kernel/random/boot_id").read().strip()  # this boot
OTHER = "docker/" + "b" * 64


@pytest.fixture
def in_container(monkeypatch):
    """Make this process look like a volsafe in container ME's new run (pid namespace THIS_RUN)."""
    real = recovery.pid_namespace
    monkeypatch.setattr(recovery, "pid_namespace", lambda pid="self": THIS_RUN if pid == "self" else real(pid))
    monkeypatch.setattr(recovery, "_own_container", lambda: ME, raising=False)


OTHER_BOOT = "0" * 8 + "-0000-0000-0000-" + "0" * 12


def owner(**fields) -> dict:
    """What a volsafe of the container's previous run recorded (pid 7, in namespace OLD_RUN)."""
    return {"pid_namespace": OLD_RUN, "boot_id": BOOT, "container": ME, **fields}


CASES = [
    pytest.param(owner(), False, id="same container, other namespace: restarted, dead"),
    pytest.param(owner(container=OTHER), True, id="another container: alive"),
    pytest.param(owner(boot_id=OTHER_BOOT), False, id="our container, another boot: dead"),
    # Another kernel sharing the daemon (a VM's, a sandboxed container's) has another boot id while it runs.
    pytest.param(owner(boot_id=OTHER_BOOT, container=OTHER), True, id="another container and another boot: alive"),
    pytest.param({"pid_namespace": OLD_RUN}, True, id="old record without the fields: alive"),
    pytest.param(owner(container=None), True, id="owner's container unknown: alive"),
]


def write_record(directory, fields: dict) -> None:
    data = {"pid": 7, "process_start": "123", **fields, "volume": "db", "mode": "stop", "containers": []}
    (directory / "7-abcd.json").write_text(json.dumps(data))


@pytest.mark.parametrize("fields,alive", CASES)
def test_a_quiesce_record_of_the_containers_previous_run_is_recovered(in_container, tmp_path, fields, alive):
    write_record(tmp_path, fields)
    claimed = [data["pid"] for _, _, data in recovery._claimed_records(tmp_path)]
    assert claimed == ([] if alive else [7])


@pytest.mark.parametrize("fields,alive", CASES)
def test_a_helper_of_the_containers_previous_run_is_removed(in_container, fields, alive):
    labels = {"io.volsafe.helper": "true", "io.volsafe.pid": "7", "io.volsafe.pidns": fields["pid_namespace"]}
    if "boot_id" in fields:
        labels.update({"io.volsafe.boot": fields["boot_id"] or "", "io.volsafe.container": fields["container"] or ""})
    removed: list[str] = []
    api = SimpleNamespace(
        containers=lambda **_: [{"Id": "c" * 64, "Names": ["/volsafe-probe-db-1234"], "Labels": labels}],
        remove_container=lambda cid, force: removed.append(cid),
    )
    recovery._remove_orphan_helpers(SimpleNamespace(url="unix:///var/run/docker.sock", api=api))
    assert removed == ([] if alive else ["c" * 64])


@pytest.mark.parametrize("fields,alive", CASES)
def test_a_fifo_directory_of_the_containers_previous_run_is_removed(in_container, tmp_path, monkeypatch, fields, alive):
    from backup.docker import fifo

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    left = tmp_path / "volsafe-io-7-123-x1y2z3"
    left.mkdir()
    (left / fifo.NAMESPACE_NAME).write_text(fields["pid_namespace"])
    if "boot_id" in fields:
        (left / "owner").write_text(json.dumps({"boot_id": fields["boot_id"], "container": fields["container"]}))
    recovery._remove_stale_fifo_dirs()
    assert left.exists() == alive


def test_what_volsafe_leaves_records_its_boot_and_container(monkeypatch, tmp_path):
    """The three kinds of leftovers carry the fields the rule reads (a FIFO directory here; the
    helper labels and records take the same ``owner_fields``)."""
    from backup.docker import fifo

    monkeypatch.setattr(recovery, "_own_container", lambda: ME)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    made = fifo.FifoDir()
    try:
        with open(os.path.join(made.path, fifo.OWNER_NAME)) as f:
            assert json.load(f) == {"boot_id": BOOT, "container": ME}
        assert recovery._fifo_dir_owner_fields(made.path) == (pid_namespace(), BOOT, ME)
    finally:
        made.remove()
    assert recovery.owner_fields() == {"pid_namespace": pid_namespace(), "boot_id": BOOT, "container": ME}


def test_boot_id_is_the_kernels():
    assert recovery.boot_id() == BOOT and len(BOOT) == 36


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0 or pid_namespace() != INIT_PID_NAMESPACE,
    reason="needs root in the initial pid namespace, and unshare",
)
def test_a_namespace_still_running_inside_the_container_is_not_taken_for_a_previous_run(monkeypatch):
    """Same container, another pid namespace, but one we can see a live process of (nested in
    ours): not a restart. Real /proc; only our own namespace and container are pretended."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sleep", "60"])
    children: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while True:
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            if children and pid_namespace(children[0]) not in (None, pid_namespace()):
                break
            assert time.monotonic() < deadline, "no process in a new pid namespace"
            time.sleep(0.05)
        nested, started = pid_namespace(children[0]), process_start_time(int(children[0]))
        real = recovery.pid_namespace
        monkeypatch.setattr(recovery, "pid_namespace", lambda pid="self": THIS_RUN if pid == "self" else real(pid))
        monkeypatch.setattr(recovery, "_own_container", lambda: ME)
        assert recovery.owner_alive(1, started, nested, BOOT, ME)  # its pid 1 runs
        assert not recovery.owner_alive(1, "1", nested, BOOT, ME)  # not the recorded process: dead
    finally:
        for child in children:
            os.kill(int(child), 9)  # pid 1 of its namespace: unshare then ends
        if not children:
            proc.kill()
        proc.wait(timeout=30)


def test_when_our_own_container_is_unknown_another_namespace_stays_alive(monkeypatch):
    real = recovery.pid_namespace
    monkeypatch.setattr(recovery, "pid_namespace", lambda pid="self": THIS_RUN if pid == "self" else real(pid))
    monkeypatch.setattr(recovery, "_own_container", lambda: None, raising=False)
    assert recovery.owner_alive(7, "123", OLD_RUN, BOOT, ME)


def test_on_the_host_an_owner_of_another_boot_is_dead_even_if_its_pid_runs_now(monkeypatch):
    # A helper label has no start time, so after a reboot a reused pid would look alive for ever.
    import os

    monkeypatch.setattr(recovery, "pid_namespace", lambda pid="self": recovery.INIT_PID_NAMESPACE)
    monkeypatch.setattr(recovery, "_own_container", lambda: None, raising=False)
    me = os.getpid()
    assert recovery.owner_alive(me, None, recovery.INIT_PID_NAMESPACE, BOOT, None) is True
    assert recovery.owner_alive(me, None, recovery.INIT_PID_NAMESPACE, OTHER_BOOT, None) is False
    # ... but not from a namespace that is not the host's: that may be another kernel's volsafe
    monkeypatch.setattr(recovery, "pid_namespace", lambda pid="self": "pid:[4026532999]")
    assert recovery.owner_alive(me, None, recovery.INIT_PID_NAMESPACE, OTHER_BOOT, None) is True
