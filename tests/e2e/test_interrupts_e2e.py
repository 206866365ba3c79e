"""Failure paths with the real daemon: signals mid-stream, locked-down helpers, missing image, no daemon."""

from __future__ import annotations

import json
import signal
import time

import pytest

from backup.docker.helper import WRITER_CAPS, created_helper, helper_session
from tests.support.volume_tree import run_in_volume, staged_bytes

pytestmark = pytest.mark.docker


def _big_volume(host, image, volume, mb: int = 400) -> None:
    host.api.create_volume(volume)
    # Incompressible data keeps the stream busy long enough to interrupt it.
    run_in_volume(host, image, volume, f"head -c {mb}m /dev/urandom > /v/big && echo small > /v/small")


def _wait_for_stream(path, timeout=30.0) -> None:
    """Wait until a backup has started writing below ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.is_file() and p.stat().st_size > 0 for p in path.rglob("*")):
            return
        time.sleep(0.05)
    raise AssertionError("backup never started writing")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_backup_leaves_nothing(docker_host, helper_image, volumes, volsafe_process, volsafe, tmp_path, sig):
    volume = volumes("sig")
    _big_volume(docker_host, helper_image, volume)
    proc = volsafe_process("backup", volume, "--to", str(tmp_path), "--threads", "1", "--level", "9")
    _wait_for_stream(tmp_path)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "volsafe: error:" in err and "Traceback" not in err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial archive, no manifest
    listed = volsafe("list", "--from", str(tmp_path), "--json")
    assert json.loads(listed.out) == []


def test_sigterm_during_restore_removes_created_volume(docker_host, helper_image, volumes, volsafe_process, volsafe, tmp_path):
    volume, target = volumes("sig"), volumes("sig-target")
    _big_volume(docker_host, helper_image, volume, mb=600)
    assert volsafe("backup", volume, "--to", str(tmp_path), "--level", "1").code == 0
    proc = volsafe_process("restore", volume, "--from", str(tmp_path), "--to-volume", target)
    # Signal once the stream is under way: data has reached the staging directory in the target.
    deadline = time.monotonic() + 60
    while staged_bytes(docker_host, target) <= 1 << 20:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the restore never started writing"
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "terminated" in err
    assert not docker_host.volume_exists(target)


def test_helpers_are_locked_down(docker_host, helper_image, volumes):
    volume = volumes("lock")
    docker_host.api.create_volume(volume)
    with created_helper(docker_host, helper_image, volume, role="backup", writable=False) as reader:
        info = docker_host.api.inspect_container(reader)
        host_config = info["HostConfig"]
        assert host_config["NetworkMode"] == "none"
        assert host_config["LogConfig"]["Type"] == "none"
        assert host_config["SecurityOpt"] == ["no-new-privileges"]
        assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
        (mount,) = info["Mounts"]
        assert mount["Name"] == volume and mount["RW"] is False
        assert info["Config"]["Labels"]["io.volsafe.helper"] == "true"
    with helper_session(docker_host, helper_image, volume, role="restore", writable=True) as writer:
        info = docker_host.api.inspect_container(writer.id)
        assert sorted(info["HostConfig"]["CapAdd"]) == sorted(WRITER_CAPS)
        assert info["HostConfig"]["NetworkMode"] == "none"
        # The read-only helper really cannot write.
    result_ro = None
    with helper_session(docker_host, helper_image, volume, role="probe", writable=False) as reader:
        result_ro = reader.exec(["sh", "-c", "touch /volsafe/target/x"])
    assert result_ro.exit_code != 0 and "Read-only file system" in result_ro.output
    assert docker_host.api.containers(all=True, filters={"label": f"io.volsafe.volume={volume}"}) == []


def test_missing_helper_image_says_how_to_provide_one(docker_host, volumes, volsafe, tmp_path):
    volume = volumes("img")
    docker_host.api.create_volume(volume)
    result = volsafe("--helper-image", "volsafe-test-absent:nope", "backup", volume, "--to", str(tmp_path))
    assert result.code == 1
    (line,) = result.err.splitlines()
    assert "volsafe-test-absent:nope" in line and "could not be pulled" in line
    assert "volsafe helper-image build" in line and "--helper-image" in line


def test_unreachable_daemon_is_one_line(volsafe, tmp_path):
    result = volsafe("--host", f"unix://{tmp_path}/no.sock", "backup", "anything", "--to", str(tmp_path))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"volsafe: error: cannot reach the Docker daemon at unix://{tmp_path}/no.sock: No such file or directory "
        "(is dockerd running? set DOCKER_HOST or --host)"
    ]
    debug = volsafe("--debug", "--host", f"unix://{tmp_path}/no.sock", "backup", "anything", "--to", str(tmp_path))
    assert debug.code == 1 and "Traceback" in debug.err
