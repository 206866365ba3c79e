"""End to end against the real daemon: backup, list and restore through the CLI, with full fidelity."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.volume_tree import DEEP_DIR, LONG_NAME, fill_tricky, run_in_volume, snapshot
from tests.support.required import skip_or_fail

pytestmark = pytest.mark.docker


def _backup(volsafe, volume: str, backend: Path) -> dict:
    result = volsafe("backup", volume, "--to", str(backend), "--json")
    assert result.code == 0, result.err
    (record,) = json.loads(result.out)
    return record


def test_round_trip_keeps_every_kind_of_entry(docker_host, helper_image, volumes, volsafe, tmp_path):
    source, copy = volumes("src"), volumes("copy")
    fill_tricky(docker_host, helper_image, source)
    before, before_links = snapshot(docker_host, helper_image, source)

    record = _backup(volsafe, source, tmp_path)
    restored = volsafe("restore", source, "--from", str(tmp_path), "--to-volume", copy)
    assert restored.code == 0, restored.err

    after, after_links = snapshot(docker_host, helper_image, copy)
    assert after == before
    assert after_links == before_links
    assert record["entries"] == len(before)

    # The snapshot itself must see what the fidelity rules name, or the comparison proves nothing.
    assert before["suid-hard"].mode == 0o4755 and before["suid-hard"].uid == 4321
    assert frozenset({"suid-hard", "suid-hard-2"}) in after_links
    assert frozenset({"hard-a", "hard-b", "dir/hard-c"}) in after_links
    assert before["sgid"].mode == 0o2750 and before["sticky"].mode == 0o1777
    assert before["unnamed-ids"].uid == 123456 and before["unnamed-ids"].gid == 654321
    assert before["pgdata"] == after["pgdata"] and before["pgdata"].mode == 0o700 and before["pgdata"].uid == 999
    assert before["rel-link"].link == "dir/sub/file.txt" and before["abs-link"].link == "/etc/passwd"
    assert before["dangling-link"].kind == "symlink" and before["rel-link"].mtime == 1015218367
    assert before["fifo"].kind == "fifo" and before["char-dev"].device == (1, 3) and before["block-dev"].device == (7, 200)
    assert before["dir"].mtime == 1049522828 and before["empty-dir"].kind == "dir"
    assert before["."].mtime == 1083827289
    assert "new\nline" in before and "ünïcødé-名前-🙂.txt" in before and LONG_NAME in before
    assert len(f"{DEEP_DIR}/leaf.txt") > 300 and f"{DEEP_DIR}/leaf.txt" in after


def test_copy_is_usable_by_hand_with_zstd_and_tar(docker_host, helper_image, volumes, volsafe, tmp_path):
    source = volumes("byhand")
    fill_tricky(docker_host, helper_image, source)
    before, _ = snapshot(docker_host, helper_image, source)
    record = _backup(volsafe, source, tmp_path / "store")

    stamp = record["id"].split("@", 1)[1]
    archive = tmp_path / "store" / source / f"{stamp}.tar.zst"
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(f"zstd -d -c '{archive}' | tar -x -C '{out}'", shell=True, check=True)
    for name in ("dir/sub/file.txt", "dir/blob.bin", f"{DEEP_DIR}/leaf.txt", "new\nline", LONG_NAME):
        path = out / name
        assert path.stat().st_size == before[name].size
    st = (out / "suid-hard").stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (4321, 0o4755)
    assert os.readlink(out / "rel-link") == "dir/sub/file.txt"


def test_list_json_reports_each_backup(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume = volumes("list")
    fill_tricky(docker_host, helper_image, volume)
    first = _backup(volsafe, volume, tmp_path)
    second = _backup(volsafe, volume, tmp_path)

    listed = volsafe("list", volume, "--from", str(tmp_path), "--json")
    assert listed.code == 0
    records = json.loads(listed.out)
    assert [r["id"] for r in records] == [first["id"], second["id"]]
    for r in records:
        assert r["volume"] == volume and r["backend"] == tmp_path.as_uri()
        assert r["created"].endswith("Z") and r["size"] > r["stored_size"] > 0
    manifest = json.loads((tmp_path / volume / (second["id"].split("@")[1] + ".json")).read_text())
    assert manifest["source"]["docker_id"] == docker_host.daemon_id
    assert manifest["archive"]["stored_size"] == (tmp_path / volume / (second["id"].split("@")[1] + ".tar.zst")).stat().st_size

    table = volsafe("list", "--from", str(tmp_path))
    assert first["id"] in table.out and "STORED" in table.out


def test_restore_ref_forms_pick_the_right_backup(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("refs"), volumes("refs-copy")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "echo one > /v/version")
    first = _backup(volsafe, volume, tmp_path)
    run_in_volume(docker_host, helper_image, volume, "echo two > /v/version")
    _backup(volsafe, volume, tmp_path)

    def restored_version(ref: str) -> str:
        result = volsafe("restore", ref, "--from", str(tmp_path), "--to-volume", target, "--force")
        assert result.code == 0, result.err
        return run_in_volume(docker_host, helper_image, target, "cat /v/version").strip()

    assert restored_version(volume) == "two"
    assert restored_version(f"{volume}@latest") == "two"
    assert restored_version(first["id"]) == "one"


def test_restore_creates_volume_with_labels_driver_and_options(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("labels"), volumes("labels-copy")
    docker_host.api.create_volume(volume, labels={"com.docker.compose.project": "shop", "tier": "db"},
                                  driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=16m"})
    # A tmpfs-backed volume holds data only while mounted, so this backup is of an empty tree;
    # what matters here is that the new volume gets the same labels, driver and options.
    _backup(volsafe, volume, tmp_path)
    assert volsafe("restore", volume, "--from", str(tmp_path), "--to-volume", target, "--driver-opts", "--keep-compose-labels").code == 0
    info = docker_host.api.inspect_volume(target)
    assert info["Labels"] == {"com.docker.compose.project": "shop", "tier": "db"}  # (without the flag: "tier" only)
    assert info["Driver"] == "local" and info["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=16m"}


def test_restore_refuses_non_empty_volume_without_force(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("src"), volumes("busy")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "echo new > /v/new-file")
    _backup(volsafe, volume, tmp_path)
    docker_host.api.create_volume(target)
    run_in_volume(docker_host, helper_image, target, "echo keep > /v/old-file")

    refused = volsafe("restore", volume, "--from", str(tmp_path), "--to-volume", target)
    assert refused.code != 0
    assert "not empty" in refused.err and "--force" in refused.err and "Traceback" not in refused.err
    assert run_in_volume(docker_host, helper_image, target, "ls -A /v").split() == ["old-file"]

    forced = volsafe("restore", volume, "--from", str(tmp_path), "--to-volume", target, "--force")
    assert forced.code == 0, forced.err
    assert run_in_volume(docker_host, helper_image, target, "ls -A /v").split() == ["new-file"]


def test_restore_into_existing_empty_volume_needs_no_force(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("src"), volumes("empty")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "echo x > /v/x")
    _backup(volsafe, volume, tmp_path)
    docker_host.api.create_volume(target)
    assert volsafe("restore", volume, "--from", str(tmp_path), "--to-volume", target).code == 0
    assert run_in_volume(docker_host, helper_image, target, "cat /v/x").strip() == "x"


def _corrupt(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def test_corrupted_archive_fails_and_leaves_no_volume(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("src"), volumes("never")
    fill_tricky(docker_host, helper_image, volume)
    record = _backup(volsafe, volume, tmp_path)
    _corrupt(tmp_path / volume / (record["id"].split("@")[1] + ".tar.zst"))

    result = volsafe("restore", record["id"], "--from", str(tmp_path), "--to-volume", target)
    assert result.code != 0
    assert len(result.err.splitlines()) == 1 and ("corrupt" in result.err or "checksum" in result.err)
    assert not docker_host.volume_exists(target)


def test_corrupted_archive_with_force_keeps_old_contents(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("src"), volumes("keep")
    fill_tricky(docker_host, helper_image, volume)
    record = _backup(volsafe, volume, tmp_path)
    _corrupt(tmp_path / volume / (record["id"].split("@")[1] + ".tar.zst"))
    docker_host.api.create_volume(target)
    run_in_volume(docker_host, helper_image, target, "mkdir /v/precious && echo keep > /v/precious/data")
    before, _ = snapshot(docker_host, helper_image, target)

    result = volsafe("restore", record["id"], "--from", str(tmp_path), "--to-volume", target, "--force")
    assert result.code != 0
    after, _ = snapshot(docker_host, helper_image, target)
    assert after == before  # no staging directory left, old data intact


def test_truncated_archive_is_refused(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume, target = volumes("src"), volumes("never")
    fill_tricky(docker_host, helper_image, volume)
    record = _backup(volsafe, volume, tmp_path)
    archive = tmp_path / volume / (record["id"].split("@")[1] + ".tar.zst")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])

    result = volsafe("restore", record["id"], "--from", str(tmp_path), "--to-volume", target)
    assert result.code != 0 and "volsafe: error:" in result.err
    assert not docker_host.volume_exists(target)


def test_bad_input_gives_one_line_and_changes_nothing(docker_host, helper_image, volumes, volsafe, tmp_path):
    missing = volumes("missing")
    result = volsafe("backup", missing, "--to", str(tmp_path))
    assert result.code == 1
    assert result.err.strip().splitlines() == [f"volsafe: error: backup of {missing} failed: no volume named '{missing}' on {os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}"]
    assert list(tmp_path.iterdir()) == []

    result = volsafe("restore", f"{missing}@20200101T000000Z-abcd", "--from", str(tmp_path))
    assert result.code == 1 and result.err.startswith("volsafe: error: no backup") and len(result.err.splitlines()) == 1

    result = volsafe("restore", missing, "--from", str(tmp_path))
    assert result.code == 1 and "no backups of volume" in result.err
    assert not docker_host.volume_exists(missing)


def test_unwritable_target_leaves_no_partial_file(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume = volumes("src")
    fill_tricky(docker_host, helper_image, volume)
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)]).returncode == 0
    if not mounted:
        skip_or_fail("cannot mount a small tmpfs here (the full-disk and read-only target checks need one)")
    try:
        result = volsafe("backup", volume, "--to", str(mountpoint))
        assert result.code == 1
        assert "No space left on device" in result.err and "Traceback" not in result.err
        assert [p for p in mountpoint.rglob("*") if p.is_file()] == []
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)

    readonly = tmp_path / "ro"
    readonly.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(readonly)], check=True)
    try:
        result = volsafe("backup", volume, "--to", str(readonly))
        assert result.code == 1 and "Read-only file system" in result.err
    finally:
        subprocess.run(["umount", str(readonly)], check=True)
