"""A store that an attacker can write to, and the restore paths it could steer, against the real daemon.

Whoever can write to a store can at worst give wrong data for the volume being restored: never
write to another host path or volume, never decide how or where a volume is created. Decoy host
directories are hashed before and after; other volumes are snapshotted before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest

from backup.archive.naming import parse_backup_id
from tests.support.volume_tree import run_in_volume, snapshot, staged_bytes

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def private_state(tmp_path, monkeypatch):
    """Keep this test's crash-recovery records to itself (other test runs share the machine)."""
    state = tmp_path / "state"
    monkeypatch.setenv("VOLSAFE_STATE_DIR", str(state))
    return state


def tree_hash(root: Path) -> str:
    """Hash every entry below ``root``: relative name, type, mode, owner and contents (symlinks not followed)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            digest.update(f"{path.relative_to(root)}\0{info.st_mode:o}\0{info.st_uid}\0{info.st_gid}\0".encode())
            if stat.S_ISREG(info.st_mode):
                digest.update(path.read_bytes())
            elif stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
    return digest.hexdigest()


def make_decoy(root: Path) -> Path:
    """A host directory with content that no restore may touch."""
    root.mkdir(parents=True)
    (root / "precious.txt").write_text("host data\n")
    (root / "sub").mkdir()
    (root / "sub" / "keys").write_bytes(os.urandom(4096))
    os.chmod(root / "sub" / "keys", 0o600)
    return root


def backup(volsafe, volume: str, store: Path) -> dict:
    result = volsafe("backup", volume, "--to", str(store), "--json")
    assert result.code == 0, result.err
    (record,) = json.loads(result.out)
    return record


def edit_manifest(store: Path, backup_id: str, change) -> None:
    """Rewrite a stored manifest as an attacker with write access to the store would."""
    path = store / parse_backup_id(backup_id).manifest_key
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def bind_opts(device: Path) -> dict:
    return {"type": "none", "o": "bind", "device": str(device)}


def small_volume(host, image, name: str, text: str = "from the backup") -> None:
    host.api.create_volume(name)
    run_in_volume(host, image, name, f"echo '{text}' > /v/data.txt && mkdir /v/d && echo x > /v/d/x")


def one_error(result) -> str:
    """Return the single stderr line of a refused command, which must be a volsafe error."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volsafe: error: "), result.err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1. A manifest's driver options decide nothing by default


def test_manifest_bind_options_are_not_used_by_restore_or_verify(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, copy = volumes("drv"), volumes("drv-copy")
    small_volume(docker_host, helper_image, volume)
    store = tmp_path / "store"
    record = backup(volsafe, volume, store)
    decoy = make_decoy(tmp_path / "decoy")
    before = tree_hash(decoy)
    edit_manifest(store, record["id"], lambda m: m["volume"].update(driver="local", driver_opts=bind_opts(decoy)))

    restored = volsafe("restore", record["id"], "--from", str(store), "--to-volume", copy)
    assert restored.code == 0, restored.err
    assert tree_hash(decoy) == before
    info = docker_host.api.inspect_volume(copy)
    assert info["Driver"] == "local" and not info["Options"]
    assert run_in_volume(docker_host, helper_image, copy, "cat /v/data.txt").strip() == "from the backup"
    assert "--driver-opts" in restored.err and str(decoy) in restored.err  # says what it did not use

    verified = volsafe("verify", record["id"], "--from", str(store), "--restore-test")
    assert verified.code == 0, verified.err + verified.out
    assert tree_hash(decoy) == before
    assert (decoy / "precious.txt").read_text() == "host data\n"


def test_driver_opts_needs_the_bind_device_named(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, copy = volumes("drvf"), volumes("drvf-copy")
    small_volume(docker_host, helper_image, volume)
    store = tmp_path / "store"
    record = backup(volsafe, volume, store)
    decoy = make_decoy(tmp_path / "decoy")
    before = tree_hash(decoy)
    edit_manifest(store, record["id"], lambda m: m["volume"].update(driver="local", driver_opts=bind_opts(decoy)))

    for extra in ([], ["--bind-device", str(tmp_path / "elsewhere")]):
        refused = volsafe("restore", record["id"], "--from", str(store), "--to-volume", copy, "--driver-opts", *extra)
        assert refused.code == 1
        line = one_error(refused)
        assert "--bind-device" in line and str(decoy) in line
        assert not docker_host.volume_exists(copy)
        assert tree_hash(decoy) == before

    # A device option without o=bind (a block device, say) is a host device too.
    edit_manifest(store, record["id"], lambda m: m["volume"].update(driver_opts={"type": "ext4", "device": "/dev/loop7"}))
    refused = volsafe("restore", record["id"], "--from", str(store), "--to-volume", copy, "--driver-opts")
    assert refused.code == 1 and "/dev/loop7" in one_error(refused)
    assert not docker_host.volume_exists(copy)


def test_driver_opts_with_the_named_bind_device_restores_there(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, copy = volumes("drvok"), volumes("drvok-copy")
    small_volume(docker_host, helper_image, volume)
    store = tmp_path / "store"
    record = backup(volsafe, volume, store)
    wanted = tmp_path / "wanted"
    wanted.mkdir()
    edit_manifest(store, record["id"], lambda m: m["volume"].update(driver="local", driver_opts=bind_opts(wanted)))

    result = volsafe(
        "restore", record["id"], "--from", str(store), "--to-volume", copy, "--driver-opts", "--bind-device", f"{wanted}/"
    )
    assert result.code == 0, result.err
    assert f"device={wanted}" in result.err and "--driver-opts" in result.err  # shows what it used
    assert docker_host.api.inspect_volume(copy)["Options"] == bind_opts(wanted)
    assert (wanted / "data.txt").read_text() == "from the backup\n"


# ---------------------------------------------------------------------------------------------
# 2. A bind-backed volume is never written through an alias


@pytest.fixture
def bind_volume(docker_host, helper_image, volumes, tmp_path):
    """A volume whose data lives in a host directory (o=bind): (name, directory)."""
    name = volumes("bind")
    directory = tmp_path / "bind-dir"
    directory.mkdir()
    docker_host.api.create_volume(name, driver_opts=bind_opts(directory))
    run_in_volume(docker_host, helper_image, name, "echo version-1 > /v/data.txt")
    return name, directory


def test_restore_of_a_bind_volume_into_a_new_volume_leaves_the_original(docker_host, helper_image, volumes, volsafe, tmp_path, bind_volume):
    volume, directory = bind_volume
    copy = volumes("bind-copy")
    store = tmp_path / "store"
    backup(volsafe, volume, store)
    (directory / "data.txt").write_text("version-2\n")
    (directory / "new.txt").write_text("made after the backup\n")
    before = tree_hash(directory)

    restored = volsafe("restore", volume, "--from", str(store), "--to-volume", copy)
    assert restored.code == 0, restored.err
    assert tree_hash(directory) == before
    assert not docker_host.api.inspect_volume(copy)["Options"]
    assert run_in_volume(docker_host, helper_image, copy, "cat /v/data.txt").strip() == "version-1"

    # Asking for the recorded options, with the device named, would alias the original: refused.
    other = volumes("bind-alias")
    refused = volsafe(
        "restore", volume, "--from", str(store), "--to-volume", other, "--driver-opts", "--bind-device", str(directory)
    )
    assert refused.code == 1
    line = one_error(refused)
    assert volume in line and str(directory) in line
    assert not docker_host.volume_exists(other)
    assert tree_hash(directory) == before


def test_restore_into_an_existing_bind_volume_needs_its_device_named(docker_host, helper_image, volsafe, tmp_path, bind_volume):
    volume, directory = bind_volume
    store = tmp_path / "store"
    backup(volsafe, volume, store)
    (directory / "data.txt").write_text("version-2\n")
    before = tree_hash(directory)

    refused = volsafe("restore", volume, "--from", str(store), "--force")
    assert refused.code == 1
    assert "--bind-device" in one_error(refused) and str(directory) in refused.err
    assert tree_hash(directory) == before

    named = volsafe("restore", volume, "--from", str(store), "--force", "--bind-device", str(directory))
    assert named.code == 0, named.err
    assert (directory / "data.txt").read_text() == "version-1\n"


def test_volume_that_aliases_another_volumes_data_is_never_written(docker_host, helper_image, volumes, volsafe, tmp_path):
    victim, alias, source = volumes("victim"), volumes("alias"), volumes("src")
    small_volume(docker_host, helper_image, victim, "victim data")
    small_volume(docker_host, helper_image, source)
    victim_dir = docker_host.api.inspect_volume(victim)["Mountpoint"]
    docker_host.api.create_volume(alias, driver_opts=bind_opts(Path(victim_dir)))
    store = tmp_path / "store"
    backup(volsafe, source, store)
    before = snapshot(docker_host, helper_image, victim)

    refused = volsafe("restore", source, "--from", str(store), "--to-volume", alias, "--force", "--bind-device", victim_dir)
    assert refused.code == 1
    line = one_error(refused)
    assert victim in line and alias in line
    assert snapshot(docker_host, helper_image, victim) == before


def test_migrate_on_one_daemon_never_aliases_a_bind_volume(docker_host, helper_image, volumes, volsafe, bind_volume):
    volume, directory = bind_volume
    copy = volumes("bind-mig")
    (directory / "more.txt").write_text("more\n")
    before = tree_hash(directory)

    refused = volsafe("migrate", volume, "--to-host", docker_host.url, "--to-volume", copy)
    assert refused.code == 1
    assert "--bind-device" in one_error(refused) and str(directory) in refused.err
    named = volsafe("migrate", volume, "--to-host", docker_host.url, "--to-volume", copy, "--bind-device", str(directory))
    assert named.code == 1
    assert volume in one_error(named)
    assert not docker_host.volume_exists(copy)
    assert tree_hash(directory) == before


# ---------------------------------------------------------------------------------------------
# 3. An empty option is a usage error, not the default


@pytest.mark.parametrize(
    "args, option",
    [
        (["restore", "VOL", "--to-volume", ""], "--to-volume"),
        (["restore", "VOL", "--from", ""], "--from"),
        (["restore", "VOL", "--to-path", ""], "--to-path"),
        (["restore", "VOL", "--to-path", "/"], "--to-path"),
        (["restore", "VOL", "--to-path", "//."], "--to-path"),
        (["restore", "VOL", "--to-container", ""], "--to-container"),
        (["restore", "VOL", "--bind-device", ""], "--bind-device"),
        (["backup", "VOL", "--to", ""], "--to"),
        (["backup", "VOL", "--to", "somewhere", "--to", " "], "--to"),
        (["migrate", "VOL", "--to-host", "unix:///nowhere.sock", "--to-volume", ""], "--to-volume"),
        (["migrate", "VOL", "--to-host", ""], "--to-host"),
        (["migrate", "VOL", "--to-host", "unix:///nowhere.sock", "--via", ""], "--via"),
        (["verify", "VOL", "--from", ""], "--from"),
        (["list", "--from", ""], "--from"),
        (["prune", "--from", "", "--keep-last", "1"], "--from"),
    ],
)
def test_empty_options_are_usage_errors(volsafe, args, option, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # whatever an empty value would default to is this test's
    result = volsafe(*args)
    assert result.code == 2
    line = one_error(result)
    assert option in line


def test_empty_to_volume_and_from_change_nothing(docker_host, helper_image, volumes, volsafe, tmp_path, monkeypatch):
    volume, copy = volumes("empty"), volumes("empty-copy")
    small_volume(docker_host, helper_image, volume)
    data_home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    backup(volsafe, volume, data_home / "volsafe" / "backups")  # the default store
    run_in_volume(docker_host, helper_image, volume, "echo changed > /v/data.txt")
    before = snapshot(docker_host, helper_image, volume)

    into_source = volsafe("restore", volume, "--to-volume", "", "--force")
    assert into_source.code == 2 and "--to-volume" in one_error(into_source)
    from_default = volsafe("restore", volume, "--from", "", "--to-volume", copy)
    assert from_default.code == 2 and "--from" in one_error(from_default)
    assert snapshot(docker_host, helper_image, volume) == before
    assert not docker_host.volume_exists(copy)


# ---------------------------------------------------------------------------------------------
# 4. Only volsafe's own staging directories are volsafe's


def test_user_files_named_like_staging_directories_are_content(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("src"), volumes("names")
    small_volume(docker_host, helper_image, volume)
    store = tmp_path / "store"
    backup(volsafe, volume, store)
    docker_host.api.create_volume(target)
    run_in_volume(
        docker_host, helper_image, target,
        "echo notes > /v/.volsafe-old-notes && mkdir /v/.volsafe-restore-cache && echo c > /v/.volsafe-restore-cache/c",
    )
    before = snapshot(docker_host, helper_image, target)

    refused = volsafe("restore", volume, "--from", str(store), "--to-volume", target)
    assert refused.code == 1 and "not empty" in one_error(refused)
    assert snapshot(docker_host, helper_image, target) == before


# ---------------------------------------------------------------------------------------------
# 5. kill -9 mid-restore: the next command cleans up


def _big_volume(host, image, volume, mb: int) -> None:
    host.api.create_volume(volume)
    run_in_volume(host, image, volume, f"head -c {mb}m /dev/urandom > /v/big && echo small > /v/small")


def _writer_helper(host, pid: int) -> dict | None:
    """Return the running restore helper of volsafe process ``pid`` (inspect data) once its tar is busy."""
    for container in host.api.containers(filters={"label": ["io.volsafe.helper=true", f"io.volsafe.pid={pid}", "io.volsafe.role=restore"]}):
        info = host.api.inspect_container(container["Id"])
        if info["State"]["Running"]:
            return info
    return None


def _kill_mid_restore(docker_host, volsafe_process, private_state, *args) -> tuple[int, list[str]]:
    """Start ``volsafe restore ARGS`` and kill -9 it as soon as its staging directory holds 1 MiB;
    return its pid and the host directories bound into its helper (its FIFO directory).

    Not timed by a sleep: on a fast machine a 400 MB restore ends within a second, so a fixed wait
    let the restore finish first (CI saw that). The staging directory is watched on the host every
    few milliseconds instead; the kill then lands with hundreds of megabytes still to come. (The
    helper cannot be frozen with ``docker pause`` instead: restore works through ``docker exec``, and
    an exec into a frozen container hangs the daemon's handling of it.)"""
    target = args[args.index("--to-volume") + 1]
    proc = volsafe_process("restore", *args, env={"VOLSAFE_STATE_DIR": str(private_state)})
    deadline = time.monotonic() + 60
    helper = None
    while helper is None and time.monotonic() < deadline and proc.poll() is None:
        helper = _writer_helper(docker_host, proc.pid)
        time.sleep(0.01)
    assert helper is not None, proc.communicate(timeout=60)
    while staged_bytes(docker_host, target) < 1 << 20:
        assert proc.poll() is None, proc.communicate(timeout=60)
        assert time.monotonic() < deadline, "the restore never staged a byte"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert 0 < staged_bytes(docker_host, target) < 300 << 20  # killed mid-stream, not at the end
    binds = [m["Source"] for m in helper["Mounts"] if m["Type"] == "bind"]
    return proc.pid, binds


def _helpers_of(host, pid: int) -> list:
    return host.api.containers(all=True, filters={"label": ["io.volsafe.helper=true", f"io.volsafe.pid={pid}"]})


def test_kill_9_during_restore_into_a_new_volume_next_command_removes_it(
    docker_host, helper_image, volumes, volsafe_process, volsafe, tmp_path, private_state
):
    volume, target, other = volumes("k9"), volumes("k9-new"), volumes("k9-next")
    _big_volume(docker_host, helper_image, volume, mb=400)
    small_volume(docker_host, helper_image, other)
    store = tmp_path / "store"
    assert volsafe("backup", volume, "--to", str(store), "--level", "1").code == 0
    pid, fifo_dirs = _kill_mid_restore(docker_host, volsafe_process, private_state, volume, "--from", str(store), "--to-volume", target)
    try:
        assert docker_host.volume_exists(target)  # what kill -9 leaves behind
        assert fifo_dirs and all(os.path.isdir(d) for d in fifo_dirs)
        assert ".volsafe-restore-" in run_in_volume(docker_host, helper_image, target, "ls -A /v")

        result = volsafe("backup", other, "--to", str(tmp_path / "next"))  # any command that talks to Docker
        assert result.code == 0, result.err
        assert f"removed volume {target}" in result.err, result.err
        assert not docker_host.volume_exists(target)
        assert not [d for d in fifo_dirs if os.path.exists(d)]
        assert not _helpers_of(docker_host, pid)
        assert not list(private_state.rglob("*.json"))  # done once: a later command does nothing
        again = volsafe("backup", other, "--to", str(tmp_path / "next"))
        assert again.code == 0 and "removed" not in again.err
        # The source was only read.
        assert run_in_volume(docker_host, helper_image, volume, "cat /v/small").strip() == "small"
    finally:
        for d in fifo_dirs:
            shutil.rmtree(d, ignore_errors=True)


def test_kill_9_during_restore_into_an_existing_volume_next_command_removes_staging(
    docker_host, helper_image, volumes, volsafe_process, volsafe, tmp_path, private_state
):
    volume, target = volumes("k9e"), volumes("k9e-old")
    _big_volume(docker_host, helper_image, volume, mb=400)
    store = tmp_path / "store"
    assert volsafe("backup", volume, "--to", str(store), "--level", "1").code == 0
    small_volume(docker_host, helper_image, target, "old contents")
    before = snapshot(docker_host, helper_image, target)
    pid, fifo_dirs = _kill_mid_restore(
        docker_host, volsafe_process, private_state, volume, "--from", str(store), "--to-volume", target, "--force"
    )
    try:
        assert ".volsafe-restore-" in run_in_volume(docker_host, helper_image, target, "ls -A /v")
        result = volsafe("list", "--from", str(store))  # does not talk to Docker: nothing happens
        assert "removed" not in result.err
        next_command = volsafe("restore", volume, "--from", str(store), "--to-volume", target)
        # Recovery removed the staging directory first; the old contents are content, so no --force: refused.
        assert next_command.code == 1 and "not empty" in next_command.err
        assert "removed .volsafe-restore-" in next_command.err and target in next_command.err
        assert snapshot(docker_host, helper_image, target) == before
        assert not [d for d in fifo_dirs if os.path.exists(d)]
        assert not _helpers_of(docker_host, pid)
    finally:
        for d in fifo_dirs:
            shutil.rmtree(d, ignore_errors=True)


def test_stale_fifo_directories_of_dead_processes_only_are_removed(docker_host, volsafe, tmp_path):
    from backup.docker.fifo import FifoDir

    live = FifoDir()  # this process's: kept
    dead = Path(live.path.replace(f"volsafe-io-{os.getpid()}-", "volsafe-io-999999999-"))
    dead.mkdir()
    unrelated = Path(live.path).parent / f"volsafe-io-notours{os.getpid()}"
    unrelated.mkdir()
    try:
        assert volsafe("backup", "vstest-absent-volume", "--to", str(tmp_path)).code != 0  # connects: recovery runs
        assert os.path.isdir(live.path) and os.path.isdir(unrelated)
        assert not dead.exists()
    finally:
        live.remove()
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(unrelated, ignore_errors=True)
