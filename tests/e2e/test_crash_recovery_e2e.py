"""Crash recovery after ``kill -9`` of ``backup --pause``: the next command unpauses the application
and removes the dead process's helper, and the partial archive it left is never listed or verified."""

from __future__ import annotations

import json

import pytest

from storage_backends.local import TEMP_MARKER
from tests.support import apps
from tests.support.apps import helpers_of, wait_until
from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker


app, private_state = apps.app, apps.private_state  # the shared fixtures; private_state is autouse


def state_of(host, container) -> dict:
    return host.api.inspect_container(container.id)["State"]


def partial_files(directory) -> list:
    return [p for p in directory.rglob("*") if p.is_file() and p.name.startswith(TEMP_MARKER) and p.stat().st_size > 0]


def test_kill_9_during_backup_pause_next_command_unpauses_and_partial_archive_is_never_listed(
    docker_host, helper_image, volumes, app, volsafe_process, volsafe, tmp_path, private_state
):
    volume, other = volumes("crash-pause"), volumes("crash-next")
    docker_host.api.create_volume(volume)
    # Incompressible, compressed at a high level on one thread: several seconds of streaming.
    run_in_volume(docker_host, helper_image, volume, "head -c 150m /dev/urandom > /v/big")
    docker_host.api.create_volume(other)
    run_in_volume(docker_host, helper_image, other, "echo hello > /v/file")
    container = app(volume)
    store = tmp_path / "store"
    proc = volsafe_process(
        "backup", volume, "--pause", "--to", str(store), "--threads", "1", "--level", "19",
        env={"VOLSAFE_STATE_DIR": str(private_state)},
    )
    try:
        wait_until(lambda: state_of(docker_host, container)["Paused"] and partial_files(store), timeout=60, what="the paused backup to be writing")
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert state_of(docker_host, container)["Paused"]  # nobody unpaused it
    assert helpers_of(docker_host, proc.pid)
    assert partial_files(store)  # the half-written archive is on disk...
    assert list(private_state.rglob("*.json"))  # ...and so is the quiesce record

    # ...but never listed, verified or pruned as a backup, by a command that talks to Docker or not.
    listed = volsafe("list", "--from", str(store), "--json")
    assert listed.code == 0 and json.loads(listed.out) == [], listed.out
    verified = volsafe("verify", "--all", "--from", str(store))
    assert "FAILED" not in verified.out and volume not in verified.out, verified.out

    # The next command that talks to Docker brings the application back and removes the helper.
    result = volsafe("backup", other, "--to", str(tmp_path / "next"))
    assert result.code == 0, result.err
    assert f"unpaused container {container.name}" in result.err and volume in result.err, result.err
    state = state_of(docker_host, container)
    assert state["Running"] and not state["Paused"]
    assert not helpers_of(docker_host, proc.pid)
    assert not list(private_state.rglob("*.json"))  # the record is done with
    again = volsafe("backup", other, "--to", str(tmp_path / "next"))
    assert again.code == 0 and "unpaused" not in again.err

    # A later backup of the volume is listed alone; the partial file still is not.
    done = volsafe("backup", volume, "--to", str(store), "--level", "1")
    assert done.code == 0, done.err
    listed = json.loads(volsafe("list", "--from", str(store), "--json").out)
    assert [entry["volume"] for entry in listed] == [volume]
