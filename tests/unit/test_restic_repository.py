"""restic targets without a daemon: locations, password sources, restic's errors, tags (real restic)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from backup.errors import NotFoundError, UsageError
from backup.restic import is_repository
from backup.restic.repository import ResticRepository, decode_meta, encode_meta, snapshot_manifest
from storage_backends.registry import open_backend


@pytest.fixture(autouse=True)
def no_restic_environment(monkeypatch, tmp_path):
    for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_restic_prefix_opens_a_repository_not_a_directory(tmp_path):
    local = open_backend(f"restic:{tmp_path}/repo")
    assert is_repository(local) and local.local_path == f"{tmp_path}/repo"
    remote = open_backend("restic:rest:http://user:s3cret@127.0.0.1:8000/repo")
    assert remote.local_path is None
    assert "s3cret" not in remote.url and remote.url == "restic:rest:http://user:***@127.0.0.1:8000/repo"
    assert not is_repository(open_backend(str(tmp_path)))


def test_password_sources_in_order_and_none_is_a_usage_error(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("from-table\nignored\n")
    (tmp_path / "b").write_text("from-env-file\n")
    with pytest.raises(UsageError, match="no repository password"):
        ResticRepository(str(tmp_path / "r")).password()
    monkeypatch.setenv("RESTIC_PASSWORD_COMMAND", "echo from-command")
    assert ResticRepository(str(tmp_path / "r")).password() == "from-command"
    monkeypatch.setenv("RESTIC_PASSWORD_FILE", str(tmp_path / "b"))
    assert ResticRepository(str(tmp_path / "r")).password() == "from-env-file"
    assert ResticRepository(str(tmp_path / "r"), password_file=str(tmp_path / "a")).password() == "from-table"
    assert ResticRepository(str(tmp_path / "r"), password_command="printf from-cmd-key").password() == "from-cmd-key"


def test_restic_never_sees_the_password_in_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTIC_PASSWORD", "pw-in-env")
    repo = ResticRepository(str(tmp_path / "r"))
    env = repo.environment()
    assert "RESTIC_PASSWORD" not in env and "pw-in-env" not in env.values()


def test_errors_of_real_restic_are_one_line_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTIC_PASSWORD", "right")
    repo = ResticRepository(str(tmp_path / "r"))
    with pytest.raises(NotFoundError) as missing:
        repo.snapshots()
    assert f"volsafe repo init restic:{tmp_path / 'r'}" in str(missing.value) and "\n" not in str(missing.value)
    repo.init()
    assert repo.snapshots() == []
    monkeypatch.setenv("RESTIC_PASSWORD", "wrong")
    with pytest.raises(Exception, match="wrong password") as wrong:
        ResticRepository(str(tmp_path / "r")).snapshots()
    assert "right" not in str(wrong.value) and "\n" not in str(wrong.value)


def _readable_lock(repo) -> bool:
    for lock_id in repo.run(["--no-lock", "list", "locks"], what="listing locks").split():
        try:
            repo.run(["--no-lock", "cat", "lock", lock_id], what="reading a lock")
            return True
        except Exception:  # noqa: BLE001 - not written completely yet
            continue
    return False


def _kill_once_locked(repo, command: list[str]) -> None:
    import signal
    import time

    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as killed:
        deadline = time.monotonic() + 60
        while not _readable_lock(repo):  # the lock file is written completely, not only created
            assert killed.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)


def test_a_stale_lock_of_a_killed_restic_on_this_host_is_removed_as_restic_unlock_does(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTIC_PASSWORD", "pw")
    repo = ResticRepository(str(tmp_path / "r"))
    repo.init()
    _kill_once_locked(repo, ["restic", "-r", repo.repository, "backup", "/usr"])
    repo.prune()  # its process is gone: stale by restic's own rule
    assert not os.listdir(tmp_path / "r" / "locks")


def test_a_lock_restic_cannot_call_stale_names_volsafe_repo_unlock(tmp_path, monkeypatch):
    # A restic in a helper container has another host name: restic cannot see that its process is
    # gone, and calls the lock stale only after 30 minutes.
    monkeypatch.setenv("RESTIC_PASSWORD", "pw")
    repo = ResticRepository(str(tmp_path / "r"))
    repo.init()
    _kill_once_locked(repo, ["unshare", "--uts", "sh", "-c", 'hostname elsewhere && exec "$@"', "sh",
                             "restic", "-r", repo.repository, "backup", "/usr"])
    with pytest.raises(Exception) as locked:
        repo.prune()
    assert "volsafe repo unlock --all" in str(locked.value) and "\n" not in str(locked.value)
    repo.unlock(remove_all=True)
    repo.prune()


def test_manifest_data_round_trips_through_tags():
    meta = {"labels": {"a,b": "c=d"}, "driver": "local", "driver_opts": {}, "docker_id": "X", "version": "1"}
    assert "," not in encode_meta(meta) and decode_meta(encode_meta(meta)) == meta
    snapshot = {
        "time": "2026-11-30T14:24:49.123456789Z", "hostname": "h", "id": "ab" * 32, "paths": ["/volsafe/volumes/db"],
        "tags": ["volsafe", "volume=db", "volsafe-id=20261130T142449Z-3df4", f"volsafe-meta={encode_meta(meta)}",
                 "volsafe-size=6", "volsafe-added=5", "volsafe-entries=4"],
    }
    m = snapshot_manifest(snapshot)
    assert str(m.backup_id) == "db@20261130T142449Z-3df4" and m.volume_labels == {"a,b": "c=d"}
    assert (m.tar_size, m.stored_size, m.entries, m.source_hostname) == (6, 5, 4, "h")
    assert m.extra == {"restic_snapshot": "ab" * 32, "restic_path": "db"}
    assert snapshot_manifest({**snapshot, "tags": ["something-else"]}) is None


def test_sizes_recorded_beside_a_local_repositorys_snapshots(tmp_path):
    from backup.archive.naming import BackupId

    repo = ResticRepository(str(tmp_path / "repo"))
    (tmp_path / "repo").mkdir()
    backup_id = BackupId("db", "20261130T142449Z-3df4")
    assert repo.record_sizes(backup_id, 6, 5, 4)
    (tmp_path / "repo" / "volsafe-sizes" / "junk").write_text("[not json")
    assert repo.recorded_sizes() == {"db@20261130T142449Z-3df4": {"size": 6, "added": 5, "entries": 4}}
    snapshot = {"time": "2026-11-30T14:24:49Z", "hostname": "h", "id": "ab" * 32, "paths": ["/volsafe/volumes/db"],
                "tags": ["volsafe", "volume=db", "volsafe-id=20261130T142449Z-3df4"]}
    m = snapshot_manifest(snapshot, repo.recorded_sizes())
    assert (m.tar_size, m.stored_size, m.entries) == (6, 5, 4)
    assert snapshot_manifest(snapshot).tar_size == 0  # not recorded, not tagged: unknown
    # A streamed snapshot counts only with its tagged sizes: a recorded file cannot finish it.
    assert snapshot_manifest({**snapshot, "tags": snapshot["tags"] + ["volsafe-stream"]}, repo.recorded_sizes()) is None
    repo.forget_sizes([backup_id])
    assert repo.recorded_sizes() == {}
    # Where the file cannot be written, the caller is told (it tags the sizes on instead).
    (tmp_path / "repo" / "volsafe-sizes" / "junk").unlink()
    (tmp_path / "repo" / "volsafe-sizes").rmdir()
    (tmp_path / "repo" / "volsafe-sizes").write_text("a file")
    assert not repo.record_sizes(backup_id, 1, 1, 1)
    assert not ResticRepository("s3:http://127.0.0.1:9/bucket").record_sizes(backup_id, 1, 1, 1)


def test_sizes_files_never_follow_links_or_open_fifos(tmp_path):
    """Whoever can write the repository must not make volsafe (root) write or read elsewhere."""
    from backup.archive.naming import BackupId

    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "db@20261130T142449Z-3df4").write_text('{"size": 666, "added": 666, "entries": 666}')
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "volsafe-sizes").symlink_to(decoy)
    repo = ResticRepository(str(tmp_path / "repo"))
    assert repo.recorded_sizes() == {}  # the decoy's file is not read through the link
    assert not repo.record_sizes(BackupId("db", "20261130T142449Z-aaaa"), 1, 2, 3)
    assert sorted(p.name for p in decoy.iterdir()) == ["db@20261130T142449Z-3df4"]  # nothing written there
    repo.forget_sizes([BackupId("db", "20261130T142449Z-3df4")])
    assert (decoy / "db@20261130T142449Z-3df4").exists()

    (tmp_path / "repo" / "volsafe-sizes").unlink()
    (tmp_path / "repo" / "volsafe-sizes").mkdir()
    os.mkfifo(tmp_path / "repo" / "volsafe-sizes" / "db@20261130T142449Z-ffff")  # opening it would block for ever
    (tmp_path / "repo" / "volsafe-sizes" / "db@20261130T142449Z-eeee").symlink_to(decoy / "db@20261130T142449Z-3df4")
    assert repo.record_sizes(BackupId("db", "20261130T142449Z-1111"), 1, 2, 3)
    assert repo.recorded_sizes() == {"db@20261130T142449Z-1111": {"size": 1, "added": 2, "entries": 3}}


def test_a_hostile_repository_cannot_name_paths_options_or_other_volumes(monkeypatch):
    """Whoever can write the repository writes snapshots and tags: none of them may name a path
    (``volume=../../repo`` would become ``mv $s/../../repo``), read as an option to restic, answer
    for another volume, or break the listing of the others."""
    from backup.restic.repository import ResticRepository, encode_meta

    def snap(letter: str, n: int, *tags: str, **fields) -> dict:
        base = {"id": letter * 64, "time": "2026-11-27T12:00:00Z", "paths": ["/volsafe/volumes/db"], "hostname": "h",
                "tags": ["volsafe", *tags, f"volsafe-id=20261127T12000{n}Z-000{n}"]}
        return {**base, **fields}

    snapshots = [
        snap("a", 1, "volume=db"),
        snap("b", 2, "volume=../../repo"),  # a path, not a volume name
        snap("c", 3, "volume=evil", "volume=db"),  # found by restic's tag filter for db, but it is evil's
        snap("d", 4, "volume=db", "volsafe-meta=" + encode_meta({"labels": 5, "driver_opts": [1]})),
        snap("e", 5, "volume=db", "volsafe-size=\u00b2"),  # isdigit() but not int()
        snap("f", 6, "volume=db", time="0000-01-01T00:00:00Z"),
        {**snap("a", 7, "volume=db"), "id": "--target=/"},  # would read as an option
        snap("9", 8, "volume=db", paths=["/volsafe/volumes/.."]),
    ]
    repo = ResticRepository("/nonexistent/volsafe-test-repo")
    monkeypatch.setattr(repo, "snapshots", lambda volume=None, host=None: snapshots)
    found = {m.extra["restic_snapshot"][:1]: m for m in repo.manifests("db")}
    assert sorted(found) == ["9", "a", "d", "e", "f"]  # b, c and the option-like id are not db's backups
    assert all(m.volume == "db" for m in found.values())
    assert found["d"].volume_labels == {} and found["d"].volume_driver_opts == {}
    assert found["e"].tar_size == 0 and found["f"].created.year == 1970
    assert found["9"].extra["restic_path"] == ""  # ".." is no directory name: restore falls back to "db"
    assert [m.volume for m in repo.manifests()] == ["db"] * 5 + ["evil"]


def test_a_streamed_snapshot_counts_only_once_its_sizes_are_tagged_on():
    base = {
        "time": "2026-11-30T14:24:49Z", "hostname": "h", "id": "cd" * 32, "paths": ["/db.tar"],
        "tags": ["volsafe", "volume=db", "volsafe-id=20261130T142449Z-3df4", "volsafe-stream"],
    }
    assert snapshot_manifest(base) is None  # restic stored it, volsafe never finished it
    done = {**base, "tags": base["tags"] + ["volsafe-size=10240", "volsafe-added=99", "volsafe-entries=3", "volsafe-digest=" + "ab" * 32]}
    m = snapshot_manifest(done)
    assert m.extra["restic_mode"] == "stream" and m.extra["restic_path"] == "db.tar"
    assert (m.tar_size, m.stored_size, m.entries, m.content_digest) == (10240, 99, 3, "tree-sha256:" + "ab" * 32)


def test_no_answer_is_not_called_a_missing_repository():
    repo = ResticRepository("s3:http://127.0.0.1:9/bucket/restic")
    refused = repo.error(
        'Fatal: unable to open config file: Stat: Get "http://127.0.0.1:9/bucket/?location=": dial tcp 127.0.0.1:9: '
        "connect: connection refused\nIs there a repository at the following location?\ns3:http://127.0.0.1:9/bucket/restic\n",
        what="listing snapshots",
    )
    assert not isinstance(refused, NotFoundError) and "cannot reach the repository" in str(refused) and "repo init" not in str(refused)
    missing = repo.error(
        "Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the following location?\n",
        what="listing snapshots",
    )
    assert isinstance(missing, NotFoundError) and "volsafe repo init restic:s3:http://127.0.0.1:9/bucket/restic" in str(missing)


def test_tagging_waits_for_another_runs_live_lock(tmp_path, monkeypatch):
    """restic tag needs the exclusive lock, and restic 0.14 does not wait for it: two volumes backed
    up at once into one repository (--concurrency, another host, another job) must both complete."""
    import threading
    import time

    monkeypatch.setenv("RESTIC_PASSWORD", "pw")
    repo = ResticRepository(str(tmp_path / "r"))
    repo.init()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    repo.run(["backup", "--tag", "first", str(tmp_path / "src")], what="backup")
    (first,) = [s["id"] for s in json.loads(repo.run(["--no-lock", "snapshots", "--json"], what="listing"))]
    env = {**os.environ, "RESTIC_PASSWORD": "pw"}
    other = subprocess.Popen(["restic", "-r", repo.repository, "backup", "--stdin", "--stdin-filename", "other"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _readable_lock(repo):  # the other run holds its (live, non-exclusive) lock
            assert other.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        def finish_other() -> None:
            other.stdin.write(b"other data\n")
            other.stdin.close()

        threading.Timer(3.0, finish_other).start()  # the other run ends after a while
        started = time.monotonic()
        repo.add_tags(first, ["volsafe-size=1"])
        assert time.monotonic() - started >= 2.0  # it waited, and did not fail at once
        assert other.wait(timeout=60) == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    tags = {t for s in json.loads(repo.run(["--no-lock", "snapshots", "--json"], what="listing")) for t in s.get("tags") or []}
    assert "volsafe-size=1" in tags


def test_prune_forgets_streamed_snapshots_that_were_never_finished_after_a_day(tmp_path, monkeypatch):
    """A streamed snapshot gets its sizes tagged on only once it is whole; one without them (tagging
    failed, the run was cut off) is unseen by list and retention, so prune forgets it once it is a
    day old, and leaves a younger one (it may still be being finished) and finished ones alone."""
    from datetime import datetime, timedelta, timezone

    from backup.jobs.retention import Policy
    from backup.restic.actions import prune_repository

    monkeypatch.setenv("RESTIC_PASSWORD", "pw")
    repo = ResticRepository(str(tmp_path / "r"))
    repo.init()
    now = datetime.now(timezone.utc)

    def streamed(stamp: str, when: datetime, *tags: str) -> None:
        tag = ",".join(["volsafe", "volume=db", f"volsafe-id={stamp}", "volsafe-stream", *tags])
        subprocess.run(
            ["restic", "-r", repo.repository, "backup", "--stdin", "--stdin-filename", "db.tar", "--tag", tag,
             "--host", "me", "--time", when.strftime("%Y-%m-%d %H:%M:%S")],
            input=b"tar bytes " + stamp.encode(), check=True, capture_output=True, env={**os.environ, "RESTIC_PASSWORD": "pw"},
        )

    old, young = now - timedelta(days=3), now - timedelta(hours=1)
    streamed("20260101T000000Z-0a0a", old)  # unfinished, old: forgotten
    streamed("20260101T000001Z-0b0b", young)  # unfinished, young: kept
    streamed("20260101T000002Z-0c0c", old, "volsafe-size=10", "volsafe-added=10", "volsafe-entries=1")  # finished
    assert [str(m.backup_id) for m in repo.manifests("db")] == ["db@20260101T000002Z-0c0c"]

    prune_repository(repo, Policy(keep_last=5), volumes=["db"], now=now, tz=timezone.utc, dry_run=True, hosts={"me"})
    assert len(repo.snapshots("db")) == 3  # a dry run forgets nothing
    prune_repository(repo, Policy(keep_last=5), volumes=["db"], now=now, tz=timezone.utc, dry_run=False, hosts={"other"})
    assert len(repo.snapshots("db")) == 3  # another host's only
    prune_repository(repo, Policy(keep_last=5), volumes=["db"], now=now, tz=timezone.utc, dry_run=False, hosts={"me"})
    left = sorted(dict(t.partition("=")[::2] for t in s["tags"])["volsafe-id"] for s in repo.snapshots("db"))
    assert left == ["20260101T000001Z-0b0b", "20260101T000002Z-0c0c"]


def test_a_volumes_listing_reads_only_that_volumes_recorded_sizes(tmp_path, monkeypatch):
    """A fleet's shared repository holds every volume's sizes files: listing one volume opens only
    its own (``VOLUME@…``: a volume name cannot hold '@', so ``db@`` names none of db2's or dbx's)."""
    from backup.archive.naming import VOLUME_NAME, BackupId
    from storage_backends.local import LocalBackend

    assert not VOLUME_NAME.fullmatch("db@x")  # no volume's prefix can match another's files
    (tmp_path / "repo").mkdir()
    repo = ResticRepository(str(tmp_path / "repo"))
    stamps = ["20261130T142449Z-3df4", "20261130T152449Z-0001"]
    for n, volume in enumerate(["db", "db2", "dbx", "db.old"]):
        for stamp in stamps:
            assert repo.record_sizes(BackupId(volume, stamp), 100 + n, 10 + n, n)
    snapshots = [
        {"id": f"{n:x}" * 64, "time": f"2026-11-30T1{4 + i}:24:49Z", "hostname": "h", "paths": [f"/volsafe/volumes/{volume}"],
         "tags": ["volsafe", f"volume={volume}", f"volsafe-id={stamp}"]}
        for n, volume in enumerate(["db", "db2", "dbx", "db.old"]) for i, stamp in enumerate(stamps)
    ]
    monkeypatch.setattr(repo, "snapshots", lambda volume=None, host=None: [s for s in snapshots if volume is None or f"volume={volume}" in s["tags"]])
    opened: list[str] = []
    real_open = LocalBackend.open

    def counting_open(self, key, offset=0):
        opened.append(key)
        return real_open(self, key, offset)

    monkeypatch.setattr(LocalBackend, "open", counting_open)
    found = repo.manifests("db")
    assert [(str(m.backup_id), m.tar_size, m.stored_size, m.entries) for m in found] == [
        (f"db@{stamp}", 100, 10, 0) for stamp in stamps
    ]
    assert sorted(opened) == [f"volsafe-sizes/db@{stamp}" for stamp in stamps]
    opened.clear()
    assert [m.tar_size for m in repo.manifests("db2")] == [101, 101] and len(opened) == 2
    opened.clear()
    assert sorted({m.volume: m.tar_size for m in repo.manifests()}.items()) == [("db", 100), ("db.old", 103), ("db2", 101), ("dbx", 102)]
    assert len(opened) == 8  # every volume's, when every volume is listed


def _counted_restic(tmp_path, monkeypatch) -> Path:
    """Point $VOLSAFE_RESTIC at a wrapper that logs each restic command (tab-separated argv) and runs
    the real restic: the log says how many times volsafe derived the repository key."""
    import shutil

    real = shutil.which("restic")
    assert real is not None
    log = tmp_path / "restic-calls.log"
    wrapper = tmp_path / "counted-restic"
    wrapper.write_text(f'#!/bin/sh\n(IFS="$(printf \'\\t\')"; printf \'%s\\n\' "$*") >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("VOLSAFE_RESTIC", str(wrapper))
    log.write_text("")
    return log


def _commands(log: Path) -> list[str]:
    """The restic command of each logged call (the word after ``-r REPOSITORY``)."""
    return [line.split("\t")[2] for line in log.read_text().splitlines()]


def _volsafe_snapshot(repo, volume: str, stamp: str, when, *, host: str = "me", streamed: bool = False, extra=()) -> None:
    """Store a snapshot tagged as volsafe's backup of ``volume`` (restic backup --stdin, real restic)."""
    tags = ["volsafe", f"volume={volume}", f"volsafe-id={stamp}", *(["volsafe-stream"] if streamed else []), *extra]
    subprocess.run(
        ["restic", "-r", repo.repository, "backup", "--stdin", "--stdin-filename", f"{volume}.tar" if streamed else volume,
         "--tag", ",".join(tags), "--host", host, "--time", when.strftime("%Y-%m-%d %H:%M:%S")],
        input=f"data of {volume} {stamp}".encode(), check=True, capture_output=True, env={**os.environ, "RESTIC_PASSWORD": "pw"},
    )


def test_prune_lists_the_repository_once_for_retention_and_unfinished_snapshots(tmp_path, monkeypatch):
    """Every restic command derives the repository key again (~0.5 s): prune lists the snapshots
    once, for the keep rules of every volume and for the streamed snapshots never finished."""
    from datetime import datetime, timedelta, timezone

    from backup.jobs.retention import Policy
    from backup.restic.actions import prune_repository

    monkeypatch.setenv("RESTIC_PASSWORD", "pw")
    repo = ResticRepository(str(tmp_path / "r"))
    repo.init()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    done = ("volsafe-size=10", "volsafe-added=10", "volsafe-entries=1")
    _volsafe_snapshot(repo, "db", "20260101T000000Z-0001", now - timedelta(days=3))
    _volsafe_snapshot(repo, "db", "20260101T000000Z-0002", now - timedelta(days=2))
    _volsafe_snapshot(repo, "db", "20260101T000000Z-0003", now - timedelta(days=3), streamed=True)  # never finished, old
    _volsafe_snapshot(repo, "web", "20260101T000000Z-0004", now - timedelta(days=3), streamed=True, extra=done)
    _volsafe_snapshot(repo, "web", "20260101T000000Z-0005", now - timedelta(days=1), streamed=True, extra=done)
    _volsafe_snapshot(repo, "web", "20260101T000000Z-0006", now - timedelta(days=3), streamed=True)  # never finished, old
    _volsafe_snapshot(repo, "cache", "20260101T000000Z-0007", now - timedelta(days=3))
    _volsafe_snapshot(repo, "cache", "20260101T000000Z-0008", now - timedelta(days=3), streamed=True)  # not pruned here
    _volsafe_snapshot(repo, "db", "20260101T000000Z-0009", now - timedelta(days=3), host="other", streamed=True)  # another host's
    log = _counted_restic(tmp_path, monkeypatch)

    def left() -> list[str]:
        return sorted(dict(t.partition("=")[::2] for t in s["tags"])["volsafe-id"][-4:] for s in repo.snapshots())

    results = prune_repository(repo, Policy(keep_last=1), volumes=["db", "web"], now=now, tz=timezone.utc, dry_run=False, hosts={"me"})
    assert _commands(log) == ["snapshots", "forget", "prune"]
    assert sorted((str(r.manifest.backup_id), r.removed) for r in results) == [
        ("db@20260101T000000Z-0001", True), ("db@20260101T000000Z-0002", False),
        ("web@20260101T000000Z-0004", True), ("web@20260101T000000Z-0005", False),
    ]
    assert left() == ["0002", "0005", "0007", "0008", "0009"]  # both unfinished old ones of db and web are gone

    log.write_text("")
    results = prune_repository(repo, Policy(keep_last=1), volumes=None, now=now, tz=timezone.utc, dry_run=False, hosts=None)
    assert _commands(log) == ["snapshots", "forget", "prune"]
    assert not any(r.removed for r in results)  # one each of db, web, cache: kept
    assert left() == ["0002", "0005", "0007"]  # cache's and the other host's unfinished ones, every host and volume now

    log.write_text("")
    prune_repository(repo, Policy(keep_last=1), volumes=["db"], now=now, tz=timezone.utc, dry_run=False, hosts={"me"})
    assert _commands(log) == ["snapshots"]  # nothing to forget: no forget, no prune


def test_verify_of_several_refs_resolves_them_from_one_listing(tmp_path, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from backup.archive.naming import parse_ref
    from backup.progress import Reporter
    from backup.restic.actions import verify_repository

    monkeypatch.setenv("RESTIC_PASSWORD", "pw")
    repo = ResticRepository(str(tmp_path / "r"))
    repo.init()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _volsafe_snapshot(repo, "db", "20260101T000000Z-0001", now - timedelta(days=2))
    _volsafe_snapshot(repo, "db", "20260101T000000Z-0002", now - timedelta(days=1))
    _volsafe_snapshot(repo, "web", "20260101T000000Z-0003", now - timedelta(days=2), host="other")
    _volsafe_snapshot(repo, "web", "20260101T000000Z-0004", now - timedelta(days=3))
    _volsafe_snapshot(repo, "dbx", "20260101T000000Z-0005", now)
    log = _counted_restic(tmp_path, monkeypatch)

    refs = [parse_ref(r) for r in ("db", "web@latest", "db@20260101T000000Z-0001")]
    verdicts = verify_repository(repo, refs, Reporter())
    assert _commands(log) == ["snapshots", "check"]
    assert [(str(v.backup_id), v.ok, v.checks[0]) for v in verdicts] == [
        ("db@20260101T000000Z-0002", True, "restic check"),  # the newest of each volume
        ("web@20260101T000000Z-0003", True, "restic check"),
        ("db@20260101T000000Z-0001", True, "restic check"),
    ]
    log.write_text("")
    with pytest.raises(NotFoundError) as missing:
        verify_repository(repo, [refs[0], parse_ref("db@20260101T000000Z-0005")], Reporter())  # dbx's stamp, not db's
    assert str(missing.value) == f"no backup db@20260101T000000Z-0005 in restic:{tmp_path / 'r'}"
    with pytest.raises(NotFoundError) as missing:
        verify_repository(repo, [refs[0], parse_ref("nothing")], Reporter())
    assert str(missing.value) == f"no backups of volume 'nothing' in restic:{tmp_path / 'r'}"
    assert _commands(log) == ["snapshots", "snapshots"]  # one listing each, and no check for a REF that names nothing
