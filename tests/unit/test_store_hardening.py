"""A store that others can read or write: private modes whatever the umask, and no link in a local
store is ever followed (list, open, stat, remove, save; and prune and list through the CLI)."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from backup.errors import VolsafeError
from backup.jobs.health import StatusStore
from backup.docker.fifo import FifoDir
from backup.docker.locks import lock_path, volume_lock
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, new_stamp
from backup.quiesce.recovery import QuiesceRecord
from storage_backends import NotFound, PermanentError
from storage_backends.local import LocalBackend

NOW = datetime.now(timezone.utc)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(params=[0o000, 0o022], ids=["umask-000", "umask-022"])
def umask(request):
    """Run the test under this umask (the process's, restored afterwards)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


# -- item 1: private modes -------------------------------------------------------------------


def test_local_store_files_are_0600_and_dirs_0700(tmp_path, umask):
    root = tmp_path / "new" / "store"
    backend = LocalBackend(root)
    backend.save("db/20261127T224450Z-1a2b.json", [b"{}"])
    backend.save("db/20261127T224450Z-1a2b.tar.zst", [b"data"])
    backend.save("db/20261127T224450Z-1a2b.json", [b"{} "])  # a replaced object stays private
    for directory in (tmp_path / "new", root, root / "db"):
        assert mode(directory) == 0o700, directory
    for name in ("20261127T224450Z-1a2b.json", "20261127T224450Z-1a2b.tar.zst"):
        assert mode(root / "db" / name) == 0o600, name


def test_status_file_and_its_lock_are_private(tmp_path, umask):
    store = StatusStore(tmp_path / "state" / "volsafe" / "status.json")
    store.record({"job": "web", "result": "success", "finished": "2026-11-27T12:00:02.000Z"})
    store.record({"job": "web", "result": "failure", "finished": "2026-11-27T13:00:02.000Z"})
    assert mode(tmp_path / "state") == 0o700 and mode(tmp_path / "state" / "volsafe") == 0o700
    assert mode(store.path) == 0o600
    assert mode(store.path.with_name("status.json.lock")) == 0o600
    assert store.read()["web"]["runs"] == 2


def test_status_file_made_public_before_becomes_private(tmp_path):
    path = tmp_path / "status.json"
    path.write_text('{"format": "volsafe-status", "jobs": {}}')
    path.chmod(0o666)
    StatusStore(path).record({"job": "web", "result": "success", "finished": "2026-11-27T12:00:02.000Z"})
    assert mode(path) == 0o600


def test_volume_lock_files_are_private(tmp_path, monkeypatch, umask):
    monkeypatch.setenv("VOLSAFE_LOCK_DIR", str(tmp_path / "locks" / "deeper"))
    host = SimpleNamespace(identity=("ABCD:EFGH", "", ""))
    with volume_lock(host, "db", action="backup"):
        path = lock_path(host.identity, "db")
        assert mode(path) == 0o600
    assert mode(tmp_path / "locks") == 0o700 and mode(tmp_path / "locks" / "deeper") == 0o700


def test_a_link_planted_as_lock_file_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.setenv("VOLSAFE_LOCK_DIR", str(tmp_path / "locks"))
    host = SimpleNamespace(identity=("ABCD:EFGH", "", ""))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (tmp_path / "locks").mkdir()
    lock_path(host.identity, "db").symlink_to(victim)
    with pytest.raises(VolsafeError, match="lock file"):
        with volume_lock(host, "db", action="backup", wait=0):
            pass
    assert victim.read_bytes() == b"precious\n"  # not truncated, not overwritten


def test_a_lock_directory_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)
    else:  # only root can give a directory away: run as if volsafe were another (non-root) user instead
        from backup.docker import locks

        me = os.geteuid()
        monkeypatch.setattr(locks.os, "geteuid", lambda: me + 1)
    monkeypatch.setenv("VOLSAFE_LOCK_DIR", str(theirs))
    with pytest.raises(VolsafeError, match="belongs to another user"):
        with volume_lock(SimpleNamespace(identity=("X", "", "")), "db", action="backup", wait=0):
            pass
    assert list(theirs.iterdir()) == []


def test_crash_recovery_records_are_private(tmp_path, monkeypatch, umask):
    monkeypatch.setenv("VOLSAFE_STATE_DIR", str(tmp_path / "state" / "quiesced"))
    record = QuiesceRecord.new(SimpleNamespace(daemon_id="ABCD:EFGH"), "db")
    record.write("db", "stop", [("c1", "web")])
    assert mode(record.path) == 0o600
    for directory in (tmp_path / "state", tmp_path / "state" / "quiesced", record.path.parent):
        assert mode(directory) == 0o700, directory


def test_fifo_directory_is_private(umask):
    made = FifoDir()
    try:
        assert mode(Path(made.path)) == 0o700  # the FIFO inside is 0666 by design: only the helper reaches it
    finally:
        made.remove()


# -- item 2: links in a local store are never followed ---------------------------------------


def fake_backup(backend_or_dir, volume: str, created: datetime, token: str) -> Manifest:
    """Store a manifest and a small archive of ``volume`` (in a backend, or a plain directory)."""
    backup_id = BackupId(volume, new_stamp(created, token))
    manifest = Manifest(backup_id, created, {}, "local", {}, "host", "id", "0", 10, 7, "0" * 64, 1)
    if isinstance(backend_or_dir, Path):
        (backend_or_dir / volume).mkdir(parents=True, exist_ok=True)
        (backend_or_dir / backup_id.archive_key).write_bytes(b"archive")
        (backend_or_dir / backup_id.manifest_key).write_bytes(manifest.to_json())
    else:
        backend_or_dir.save(backup_id.archive_key, [b"archive"])
        backend_or_dir.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def planted(tmp_path):
    """A store with one real backup of db, and links to backups outside it:

    * ``ext`` is a link to a directory outside holding two backups of ext;
    * ``db/<newer>.json`` and ``.tar.zst`` are links to a backup of db kept outside.
    """
    store, outside = tmp_path / "store", tmp_path / "outside"
    backend = LocalBackend(store)
    real = fake_backup(backend, "db", NOW - timedelta(days=2), "aaaa")
    for days, token in ((3, "e001"), (1, "e002")):
        fake_backup(outside, "ext", NOW - timedelta(days=days), token)
    (store / "ext").symlink_to(outside / "ext", target_is_directory=True)
    linked = fake_backup(outside / "db-elsewhere", "db", NOW - timedelta(days=1), "bbbb")
    for key in (linked.backup_id.manifest_key, linked.backup_id.archive_key):
        (store / key).symlink_to(outside / "db-elsewhere" / key)
    return SimpleNamespace(store=store, outside=outside, backend=backend, real=real, linked=linked, before=snapshot(outside))


def test_links_are_not_listed_and_a_warning_names_them(planted, caplog):
    with caplog.at_level(logging.WARNING, logger="volsafe.storage"):
        keys = sorted(info.key for info in planted.backend.list())
        assert keys == sorted([planted.real.backup_id.manifest_key, planted.real.backup_id.archive_key])
        assert [info.key for info in planted.backend.list("ext/")] == []
    assert "skipping ext:" in caplog.text and planted.linked.backup_id.manifest_key in caplog.text
    assert "symbolic link" in caplog.text


@pytest.mark.parametrize("key_of", ["manifest", "archive", "in-linked-dir"])
@pytest.mark.parametrize("operation", ["open", "stat", "remove"])
def test_open_stat_remove_refuse_links(planted, key_of, operation):
    if key_of == "in-linked-dir":
        key = sorted(p.name for p in (planted.outside / "ext").iterdir())[0]
        key = f"ext/{key}"
    else:
        key = getattr(planted.linked.backup_id, f"{key_of}_key")
    with pytest.raises(PermanentError, match="symbolic link"):
        getattr(planted.backend, operation)(key)
    assert snapshot(planted.outside) == planted.before
    assert (planted.store / key.split("/")[0]).exists()


def test_save_does_not_write_through_a_linked_directory(planted):
    with pytest.raises(PermanentError, match="symbolic link"):
        planted.backend.save("ext/20261127T224450Z-ffff.json", [b"{}"])
    with pytest.raises(PermanentError, match="symbolic link"):
        planted.backend.save(planted.linked.backup_id.manifest_key + "/x", [b"{}"])
    assert snapshot(planted.outside) == planted.before


def test_save_replaces_a_linked_file_instead_of_writing_through_it(planted):
    key = planted.linked.backup_id.manifest_key
    planted.backend.save(key, [b"new"])
    assert not (planted.store / key).is_symlink() and (planted.store / key).read_bytes() == b"new"
    assert snapshot(planted.outside) == planted.before


def test_prune_and_list_leave_the_outside_alone(planted, run, monkeypatch):
    monkeypatch.setenv("VOLSAFE_HOST_NAME", "host")  # the host fake_backup records: prune touches its backups
    store = str(planted.store)
    code, out, err = run("list", "--from", store, "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(planted.real.backup_id)]
    for volume in ("ext", "db"):
        code, out, err = run("prune", volume, "--from", store, "--keep-last", "1", "--json")
        assert code == 0, err
    code, out, err = run("prune", "--from", store, "--keep-last", "1", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(planted.real.backup_id)]
    assert snapshot(planted.outside) == planted.before
    assert (planted.store / planted.real.backup_id.manifest_key).read_bytes() == planted.real.to_json()
    code, out, err = run("verify", "--all", "--from", store, "--json")
    assert snapshot(planted.outside) == planted.before
    assert "unexpected" not in err


def test_a_fifo_in_the_store_does_not_hang_list_or_open(tmp_path):
    backend = LocalBackend(tmp_path / "store")
    real = fake_backup(backend, "db", NOW - timedelta(days=1), "aaaa")
    fifo_id = BackupId("db", new_stamp(NOW, "ffff"))
    os.mkfifo(tmp_path / "store" / fifo_id.manifest_key)
    done = []
    worker = threading.Thread(target=lambda: done.append(([i.key for i in backend.list()], _refusal(backend, fifo_id.manifest_key))), daemon=True)
    worker.start()
    worker.join(10)
    assert done, "list or open hung on a FIFO"
    listed, refusal = done[0]
    assert sorted(listed) == sorted([real.backup_id.archive_key, real.backup_id.manifest_key])
    assert "FIFO" in refusal or "special file" in refusal


def _refusal(backend, key) -> str:
    try:
        backend.open(key)
    except PermanentError as exc:
        return str(exc)
    return "opened"


def test_root_itself_may_be_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    backend = LocalBackend(tmp_path / "link")
    backend.save("db/x", [b"1"])
    assert [i.key for i in backend.list()] == ["db/x"]
    assert (tmp_path / "real" / "db" / "x").read_bytes() == b"1"
    backend.remove("db/x")
    with pytest.raises(NotFound):
        backend.stat("db/x")


def test_deep_directories_do_not_crash_list(tmp_path, caplog):
    backend = LocalBackend(tmp_path / "store")
    backend.save("db/x", [b"1"])
    deep = tmp_path / "store" / "deep"
    path = deep
    for _ in range(60):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "f").write_bytes(b"x")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="volsafe.storage"):
        assert [i.key for i in backend.list()] == ["db/x"]
    assert "deeper than" in caplog.text and time.monotonic() - started < 10
