"""Pruning I/O on a local backend with hand-made backups (no daemon): order, dry run, CLI output."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from backup.actions.prune import run_prune
from backup.cli import main as cli_main
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, new_stamp
from backup.jobs.retention import Policy
from storage_backends.local import LocalBackend

NOW = datetime.now(timezone.utc)


def fake_backup(backend, volume: str, created: datetime) -> Manifest:
    backup_id = BackupId(volume, new_stamp(created))
    manifest = Manifest(backup_id, created, {}, "local", {}, "host", "id", "0", 10, 10, "0" * 64, 1)
    backend.save(backup_id.archive_key, [b"archive"])
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest


@pytest.fixture
def backend(tmp_path):
    return LocalBackend(tmp_path / "store")


def test_prune_removes_manifest_first_then_archive(backend):
    old = [fake_backup(backend, "db", NOW - timedelta(days=d)) for d in (3, 2, 1)]
    calls = []
    real_remove = backend.remove
    backend.remove = lambda key: (calls.append(key), real_remove(key))[1]
    results = run_prune([backend], Policy(keep_last=1), now=NOW)
    assert [r.decision.keep for r in results] == [True, False, False]
    assert calls == [old[1].backup_id.manifest_key, old[1].backup_id.archive_key, old[0].backup_id.manifest_key, old[0].backup_id.archive_key]
    assert sorted(i.key for i in backend.list()) == sorted([old[2].backup_id.archive_key, old[2].backup_id.manifest_key])


def test_failed_manifest_removal_leaves_the_archive(backend):
    fake_backup(backend, "db", NOW)  # the newest, which prune keeps
    doomed = fake_backup(backend, "db", NOW - timedelta(days=1))
    from storage_backends import PermanentError

    def refuse(key):
        raise PermanentError(f"cannot remove {key}")

    backend.remove = refuse
    (keep, failed) = run_prune([backend], Policy(keep_last=1), now=NOW)
    assert keep.decision.keep and failed.error and not failed.removed
    assert backend.stat(doomed.backup_id.archive_key) and backend.stat(doomed.backup_id.manifest_key)


def test_volumes_are_pruned_separately(backend):
    for volume in ("a", "b"):
        for d in range(3):
            fake_backup(backend, volume, NOW - timedelta(days=d))
    results = run_prune([backend], Policy(keep_last=1), volumes=["a"], now=NOW)
    assert {r.manifest.volume for r in results} == {"a"}
    assert len([i for i in backend.list("a/") if i.key.endswith(".json")]) == 1
    assert len([i for i in backend.list("b/") if i.key.endswith(".json")]) == 3


def cli(capsys, *args):
    capsys.readouterr()
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_dry_run_lists_decisions_with_reasons_and_removes_nothing(backend, capsys, monkeypatch):
    monkeypatch.setenv("VOLSAFE_HOST_NAME", "host")  # prune touches this host's backups only
    made = [fake_backup(backend, "db", NOW - timedelta(days=d)) for d in (2, 1, 0)]
    code, out, err = cli(capsys, "prune", "db", "--from", str(backend.root), "--keep-last", "2", "--dry-run", "--timezone", "UTC")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["ACTION", "ID", "HOST", "CREATED", "BACKEND", "REASON"]
    assert [r.split()[:2] for r in rows] == [["keep", str(made[2].backup_id)], ["keep", str(made[1].backup_id)], ["remove", str(made[0].backup_id)]]
    assert rows[0].endswith("last 1") and rows[2].endswith("no keep rule matched")
    assert "dry run: would keep 2 and remove 1" in err
    assert len([i for i in backend.list() if i.key.endswith(".json")]) == 3

    code, out, err = cli(capsys, "prune", "--from", str(backend.root), "--keep-daily", "1", "--json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["action"] for r in records] == ["keep", "removed", "removed"]
    assert records[0]["reason"].startswith("daily ")
    assert [i.key for i in backend.list() if i.key.endswith(".json")] == [made[2].backup_id.manifest_key]


def test_cli_refuses_a_policy_that_keeps_nothing(backend, capsys):
    code, out, err = cli(capsys, "prune", "--from", str(backend.root))
    assert code == 2
    assert err.startswith("volsafe: error: give at least one keep rule")
