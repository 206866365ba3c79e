"""The helper that reads a volume for a backup through the FIFO path is as locked down as every other:
read-only source, no network, every capability dropped but the one it reads with, no-new-privileges,
and no mounts but the volume and the private FIFO directory. Checked on the running helper while a
backup streams through it, from Docker's view (inspect) and from inside (its pid 1's /proc)."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from backup.docker.fifo import FIFO_NAME, IO_DIR
from backup.docker.helper import LABEL as HELPER_LABEL, MOUNT_POINT
from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker

CAP_DAC_OVERRIDE = 1 << 1


def running_backup_helper(host, pid: int) -> dict | None:
    found = host.api.containers(filters={"label": [f"{HELPER_LABEL}=true", f"io.volsafe.pid={pid}", "io.volsafe.role=backup"]})
    return found[0] if found else None


def exec_output(host, container: str, script: str) -> str:
    exec_id = host.api.exec_create(container, ["sh", "-c", script])["Id"]
    return host.api.exec_start(exec_id).decode(errors="replace")


def test_fifo_reader_helper_is_locked_down(docker_host, helper_image, volumes, volsafe_process, tmp_path, monkeypatch):
    monkeypatch.delenv("VOLSAFE_DATA_PATH", raising=False)
    labels = docker_host.api.inspect_image(helper_image)["Config"].get("Labels") or {}
    assert labels.get("io.volsafe.gnu-tar"), "the test helper image has no GNU tar: backups would not take the FIFO path"
    volume = volumes("fifo-helper")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "head -c 150m /dev/urandom > /v/big && echo small > /v/small")
    proc = volsafe_process("backup", volume, "--to", str(tmp_path / "store"), "--threads", "1", "--level", "19",
                           env={"VOLSAFE_DATA_PATH": ""})
    try:
        deadline = time.monotonic() + 60
        while (helper := running_backup_helper(docker_host, proc.pid)) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no running backup helper appeared"
            time.sleep(0.02)
        info = docker_host.api.inspect_container(helper["Id"])
        inside = exec_output(
            docker_host, helper["Id"],
            "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/1/status; echo; grep ' /volsafe' /proc/1/mountinfo; echo; ls /sys/class/net",
        )
        still_streaming = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert still_streaming, "the backup ended before its helper was inspected"

    # The FIFO path: GNU tar, pid 1, writes into the FIFO in the bind-mounted directory.
    command = " ".join(info["Config"]["Cmd"])
    assert f"--file {IO_DIR}/{FIFO_NAME}" in command and info["Config"]["Labels"]["io.volsafe.volume"] == volume

    host_config = info["HostConfig"]
    assert host_config["NetworkMode"] == "none" and info["Config"].get("NetworkDisabled") is True
    assert host_config["CapDrop"] == ["ALL"] and host_config["CapAdd"] == ["DAC_OVERRIDE"]
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert host_config["Privileged"] is False and not host_config.get("Devices")
    assert host_config["LogConfig"]["Type"] == "none"
    assert host_config.get("PidMode", "") == "" and host_config.get("IpcMode") in ("private", "none", "shareable", "")

    # Exactly two mounts: the volume read-only, and the private FIFO directory.
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert sorted(mounts) == [IO_DIR, MOUNT_POINT]
    source = mounts[MOUNT_POINT]
    assert source["Type"] == "volume" and source["Name"] == volume and source["RW"] is False
    io = mounts[IO_DIR]
    assert io["Type"] == "bind" and Path(io["Source"]).name.startswith("volsafe-io-")

    # From inside: only CAP_DAC_OVERRIDE, no_new_privs set, the volume mounted ro, no network device but lo.
    status, mountinfo, net = (part.strip() for part in inside.split("\n\n", 2))
    fields = dict(line.split(":\t", 1) for line in status.splitlines())
    assert int(fields["CapEff"], 16) == CAP_DAC_OVERRIDE and int(fields["CapPrm"], 16) == CAP_DAC_OVERRIDE
    assert int(fields["CapBnd"], 16) == CAP_DAC_OVERRIDE
    assert fields["NoNewPrivs"].strip() == "1"
    target = next(line for line in mountinfo.splitlines() if line.split()[4] == MOUNT_POINT)
    assert target.split()[5].split(",")[0] == "ro"
    assert net.split() == ["lo"]

    # The FIFO directory was private to volsafe (0700) and is gone with the backup.
    assert not os.path.exists(io["Source"])
    assert running_backup_helper(docker_host, proc.pid) is None


def test_fifo_directory_is_private(tmp_path):
    from backup.docker.fifo import fifo_dir

    with fifo_dir() as made:
        assert stat.S_IMODE(os.stat(made.path).st_mode) == 0o700
        assert sorted(os.listdir(made.path)) == ["errors", "owner", "pidns", FIFO_NAME] and stat.S_ISFIFO(os.stat(made.fifo).st_mode)
    assert not os.path.exists(made.path)
