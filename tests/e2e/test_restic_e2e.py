"""restic repositories as targets, end to end: real restic, real daemon, a local repository."""

from __future__ import annotations

import json
import os
import signal
import time
import subprocess
from pathlib import Path

import pytest

from tests.support.volume_tree import fill_tricky, run_in_volume, snapshot

pytestmark = pytest.mark.docker

PASSWORD = "correct horse battery staple"


@pytest.fixture
def repo(tmp_path, volumes, volsafe, monkeypatch) -> str:
    """A fresh restic repository made with 'volsafe repo init'; restic's caches are the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "host-cache"))
    monkeypatch.setenv("VOLSAFE_RESTIC_CACHE_VOLUME", volumes("restic-cache"))
    for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    monkeypatch.setenv("RESTIC_PASSWORD_FILE", str(tmp_path / "pw"))
    target = f"restic:{tmp_path / 'repo'}"
    made = volsafe("repo", "init", target)
    assert made.code == 0, made.err
    return target


def _restic(target: str, *args: str) -> str:
    done = subprocess.run(
        ["restic", "-r", target[len("restic:"):], *args], capture_output=True, text=True, check=True,
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD},
    )
    return done.stdout


def _backup(volsafe, volume: str, target: str) -> dict:
    result = volsafe("backup", volume, "--to", target, "--json")
    assert result.code == 0, result.err
    (record,) = json.loads(result.out)
    return record


def test_round_trip_through_restic_keeps_every_kind_of_entry(docker_host, helper_image, volumes, volsafe, repo):
    source, copy = volumes("rsrc"), volumes("rcopy")
    fill_tricky(docker_host, helper_image, source)
    before, before_links = snapshot(docker_host, helper_image, source)

    record = _backup(volsafe, source, repo)
    assert record["backend"] == repo and record["compression"] == "restic"
    restored = volsafe("restore", source, "--from", repo, "--to-volume", copy)
    assert restored.code == 0, restored.err

    after, after_links = snapshot(docker_host, helper_image, copy)
    assert after == before
    assert after_links == before_links
    # The comparison covers what the fidelity rules name (the snapshot itself must see them).
    assert before["suid-hard"].mode == 0o4755 and before["fifo"].kind == "fifo" and before["char-dev"].device == (1, 3)
    assert before["."].mtime == 1083827289 and before["pgdata"].mode == 0o700


BIG_FILES = """
set -eu
cd /v
mkdir -p data small
i=0; while [ $i -lt 12 ]; do head -c 1048576 /dev/urandom > data/f$i; i=$((i+1)); done
i=0; while [ $i -lt 200 ]; do echo "row $i" > small/s$i; i=$((i+1)); done
"""


def test_repeat_backup_adds_only_the_change_and_list_reports_it(docker_host, helper_image, volumes, volsafe, repo):
    source = volumes("rrep")
    docker_host.api.create_volume(source, labels={"app": "db"})
    run_in_volume(docker_host, helper_image, source, BIG_FILES)
    first = _backup(volsafe, source, repo)
    run_in_volume(docker_host, helper_image, source, "head -c 65536 /dev/urandom > /v/data/f3 && echo changed > /v/small/s7")
    second = _backup(volsafe, source, repo)

    listed = volsafe("list", source, "--from", repo, "--json")
    assert listed.code == 0, listed.err
    rows = json.loads(listed.out)
    assert [r["id"] for r in rows] == [first["id"], second["id"]]
    volume_bytes = 11 * 1048576 + 65536 + sum(len(f"row {i}\n") for i in range(200)) - len("row 7\n") + len("changed\n")
    assert rows[1]["size"] == volume_bytes
    assert rows[0]["stored_size"] > 12 * 1048576 * 0.9  # random data: restic's compression cannot shrink it
    assert 0 < rows[1]["stored_size"] < 300_000  # the 64 KiB rewritten, a small file, the changed trees
    assert set(rows[0]) == set(json.loads(volsafe("list", source, "--from", repo, "--json").out)[0])

    # Plain restic shows host, volume (tag) and time, and gets the files back without volsafe.
    snapshots = json.loads(_restic(repo, "snapshots", "--json"))
    assert len(snapshots) == 2
    assert {s["hostname"] for s in snapshots} == {docker_host.name}
    assert all(f"volume={source}" in s["tags"] for s in snapshots)
    assert _restic(repo, "dump", "latest", f"/{source}/small/s7") == "changed\n"
    # The sizes are recorded beside the snapshots, not by rewriting them with 'restic tag' (a second
    # key derivation and the exclusive lock); restic's own check is content with the extra directory.
    assert sorted(os.listdir(Path(repo[len("restic:"):]) / "volsafe-sizes")) == sorted([first["id"], second["id"]])
    assert not any(t.startswith("volsafe-size=") for s in snapshots for t in s["tags"])
    _restic(repo, "check")

    # Labels come back from the snapshot's manifest data.
    copy = volumes("rrepcopy")
    assert volsafe("restore", first["id"], "--from", repo, "--to-volume", copy).code == 0
    assert docker_host.api.inspect_volume(copy)["Labels"] == {"app": "db"}
    assert run_in_volume(docker_host, helper_image, copy, "cat /v/small/s7") == "row 7\n"


def test_verify_and_prune_use_restic_check_and_forget(docker_host, helper_image, volumes, volsafe, repo):
    source = volumes("rprune")
    run_in_volume(docker_host, helper_image, source, "echo one > /v/a")
    _backup(volsafe, source, repo)
    run_in_volume(docker_host, helper_image, source, "echo two > /v/a")
    newest = _backup(volsafe, source, repo)

    verified = volsafe("verify", "--all", "--from", repo)
    assert verified.code == 0, verified.err
    assert verified.out.count("restic check") == 2

    pruned = volsafe("prune", "--from", repo, "--keep-last", "1")
    assert pruned.code == 0, pruned.err
    rows = json.loads(volsafe("list", "--from", repo, "--json").out)
    assert [r["id"] for r in rows] == [newest["id"]]
    assert len(json.loads(_restic(repo, "snapshots", "--json"))) == 1
    assert os.listdir(Path(repo[len("restic:"):]) / "volsafe-sizes") == [newest["id"]]  # the forgotten one's sizes went with it
    _restic(repo, "check")

    # A damaged repository fails verify.
    packs = [p for p in (Path(repo[len("restic:"):]) / "data").rglob("*") if p.is_file()]
    for pack in packs:
        pack.write_bytes(b"garbage")
    broken = volsafe("verify", "--all", "--from", repo)
    assert broken.code == 1


def test_sizes_are_tagged_on_where_they_cannot_be_written_beside_the_snapshots(docker_host, helper_image, volumes, volsafe, repo):
    source = volumes("rtagged")
    run_in_volume(docker_host, helper_image, source, "head -c 100000 /dev/urandom > /v/blob")
    (Path(repo[len("restic:"):]) / "volsafe-sizes").write_text("not a directory\n")
    made = _backup(volsafe, source, repo)
    (row,) = json.loads(volsafe("list", source, "--from", repo, "--json").out)
    assert row["id"] == made["id"] and row["size"] == 100000 and row["stored_size"] > 90000
    (snapshot,) = json.loads(_restic(repo, "snapshots", "--json"))
    assert "volsafe-size=100000" in snapshot["tags"]


def test_a_full_disk_fails_in_one_line_and_the_next_run_succeeds(docker_host, helper_image, volumes, volsafe, repo, tmp_path):
    """A local repository on a filesystem that fills up mid-backup: one line naming the cause, no
    snapshot listed, restic's check passes, and once there is room the next backup succeeds."""
    source = volumes("rfull")
    run_in_volume(docker_host, helper_image, source, "head -c 20000000 /dev/urandom > /v/blob && echo small > /v/note")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        target = f"restic:{disk / 'repo'}"
        assert volsafe("repo", "init", target).code == 0
        failed = volsafe("backup", source, "--to", target)
        assert failed.code == 1, failed.err
        assert "no space left on device" in failed.err.lower() and "Traceback" not in failed.err
        assert len(failed.err.strip().splitlines()) == 1, failed.err
        assert json.loads(volsafe("list", "--from", target, "--json").out) == []
        subprocess.run(["mount", "-o", "remount,size=64m", "tmpfs", str(disk)], check=True)
        _restic(target, "check")
        assert volsafe("backup", source, "--to", target).code == 0
        (row,) = json.loads(volsafe("list", "--from", target, "--json").out)
        assert row["size"] == 20000000 + len("small\n")
        _restic(target, "check")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_restore_refuses_a_volume_with_data(docker_host, helper_image, volumes, volsafe, repo):
    source, other = volumes("rref"), volumes("rrefother")
    run_in_volume(docker_host, helper_image, source, "echo new > /v/a")
    _backup(volsafe, source, repo)
    run_in_volume(docker_host, helper_image, other, "echo old > /v/keep")
    refused = volsafe("restore", source, "--from", repo, "--to-volume", other)
    assert refused.code == 1 and "not empty" in refused.err
    forced = volsafe("restore", source, "--from", repo, "--to-volume", other, "--force")
    assert forced.code == 0, forced.err
    assert run_in_volume(docker_host, helper_image, other, "ls -A /v; cat /v/a") == "a\nnew\n"


def test_wrong_password_is_one_line_and_never_shows_a_password(docker_host, helper_image, volumes, volsafe, repo, tmp_path, monkeypatch):
    source = volumes("rpw")
    run_in_volume(docker_host, helper_image, source, "echo x > /v/a")
    monkeypatch.setenv("RESTIC_PASSWORD_FILE", str(tmp_path / "wrong"))
    (tmp_path / "wrong").write_text("not-the-password\n")
    for args in (("backup", source, "--to", repo), ("list", "--from", repo)):
        result = volsafe(*args)
        assert result.code == 1
        lines = [line for line in result.err.splitlines() if line.startswith("volsafe: error")]
        assert len(lines) == 1 and "wrong password" in lines[0], result.err
        assert "not-the-password" not in result.err + result.out and PASSWORD not in result.err + result.out


def test_missing_repository_names_repo_init_and_is_not_created(docker_host, helper_image, volumes, volsafe, repo, tmp_path):
    source = volumes("rmiss")
    run_in_volume(docker_host, helper_image, source, "echo x > /v/a")
    for missing in (tmp_path / "nothing-here", tmp_path / "empty-dir"):
        if missing.name == "empty-dir":
            missing.mkdir()
        result = volsafe("backup", source, "--to", f"restic:{missing}")
        assert result.code == 1
        assert f"volsafe repo init restic:{missing}" in result.err, result.err
        assert not (missing / "config").exists()
    assert not (tmp_path / "nothing-here").exists()


def test_missing_restic_binary_says_how_to_install(volsafe, repo, monkeypatch):
    monkeypatch.setenv("VOLSAFE_RESTIC", "/nonexistent/restic")
    result = volsafe("list", "--from", repo)
    assert result.code == 1
    assert "apt-get install restic" in result.err


def test_config_table_of_type_restic_with_password_file(volsafe, repo, tmp_path, monkeypatch, docker_host, helper_image, volumes):
    monkeypatch.delenv("RESTIC_PASSWORD_FILE")
    (tmp_path / "pw2").write_text(PASSWORD + "\n")
    config = tmp_path / "volsafe.toml"
    config.write_text(f'[backends.vault]\ntype = "restic"\nrepository = "{repo[len("restic:"):]}"\npassword_file = "{tmp_path / "pw2"}"\n')
    source = volumes("rcfg")
    run_in_volume(docker_host, helper_image, source, "echo x > /v/a")
    backed = volsafe("--config", str(config), "backup", source, "--json")
    assert backed.code == 0, backed.err
    listed = volsafe("--config", str(config), "list", "--json")
    assert [r["volume"] for r in json.loads(listed.out)] == [source]
    assert json.loads(listed.out)[0]["backend"] == repo


def test_interrupted_backup_leaves_no_lock_and_no_snapshot(docker_host, helper_image, volumes, volsafe, volsafe_process, repo):
    source = volumes("rint")
    run_in_volume(docker_host, helper_image, source, "i=0; while [ $i -lt 400 ]; do head -c 1048576 /dev/urandom > /v/f$i; i=$((i+1)); done")
    locks = Path(repo[len("restic:"):]) / "locks"
    proc = volsafe_process("backup", source, "--to", repo)
    deadline = time.monotonic() + 180
    while not any(locks.iterdir()):  # restic in the helper has opened the repository
        assert proc.poll() is None and time.monotonic() < deadline, "restic never locked the repository"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert list(locks.iterdir()) == []  # else the next forget/prune would be refused for 30 minutes
    assert json.loads(volsafe("list", "--from", repo, "--json").out) == []

    run_in_volume(docker_host, helper_image, source, "rm /v/f1*")  # keep the next backup short
    assert volsafe("backup", source, "--to", repo).code == 0
    pruned = volsafe("prune", "--from", repo, "--keep-last", "1")
    assert pruned.code == 0, pruned.err
    _restic(repo, "check")


def test_volumes_overview_reads_a_restic_backend(volsafe, repo, tmp_path, docker_host, helper_image, volumes):
    config = tmp_path / "only-restic.toml"
    config.write_text(f'[backends.vault]\ntype = "restic"\nrepository = "{repo[len("restic:"):]}"\n')
    source = volumes("rvols")
    run_in_volume(docker_host, helper_image, source, "echo x > /v/a")
    record = _backup(volsafe, source, repo)
    overview = volsafe("--config", str(config), "volumes", "--json")
    assert overview.code == 0, overview.err
    assert record["id"].split("@")[1] in overview.out


def test_migrate_via_a_restic_repository_to_another_daemon(volsafe, repo, docker_host, helper_image, volumes, second_daemon, target_volumes):
    """The second daemon cannot mount this host's repository: migrate stores a streamed snapshot
    (the volume's tar), which restore reads back with restic dump on this host, checked against
    the content digest, into the other daemon's volume: every kind of entry arrives."""
    source, target = volumes("rmig"), target_volumes("rmigdst")
    docker_host.api.create_volume(source, labels={"tier": "db"})
    fill_tricky(docker_host, helper_image, source)
    before = snapshot(docker_host, helper_image, source)
    moved = volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target, "--via", repo, "--json")
    assert moved.code == 0, moved.err
    result = json.loads(moved.out)
    assert result["mode"] == "via" and result["verified"] is True
    assert snapshot(second_daemon.host, helper_image, target) == before
    assert second_daemon.host.api.inspect_volume(target)["Labels"] == {"tier": "db"}
    (listed,) = json.loads(volsafe("list", source, "--from", repo, "--json").out)
    assert listed["id"] == result["volumes"][0]["backup_id"] and listed["size"] > 0
    (snap,) = json.loads(_restic(repo, "snapshots", "--json"))
    assert snap["paths"] == [f"/{source}.tar"]  # plain restic sees the tar: restic dump gets it back by hand

def test_cache_volume_is_not_made_for_a_refused_target(docker_host, helper_image, volumes, volsafe, repo, monkeypatch):
    cache = volumes("restic-cache-refused")
    monkeypatch.setenv("VOLSAFE_RESTIC_CACHE_VOLUME", cache)
    missing = volumes("rmissing")  # named, never created
    backed = volsafe("backup", missing, "--to", repo)
    assert backed.code != 0 and f"no volume named '{missing}'" in backed.err
    assert not docker_host.volume_exists(cache)

    source = volumes("rcachesrc")
    run_in_volume(docker_host, helper_image, source, "echo one > /v/a")
    monkeypatch.setenv("VOLSAFE_RESTIC_CACHE_VOLUME", volumes("restic-cache-backup"))
    _backup(volsafe, source, repo)
    monkeypatch.setenv("VOLSAFE_RESTIC_CACHE_VOLUME", cache)
    restored = volsafe("restore", source, "--from", repo, "--to-volume", "bad/name")
    assert restored.code == 2 and "bad/name" in restored.err
    assert not docker_host.volume_exists(cache)
