"""``volsafe delete ID…`` on hand-made backups (no daemon): local directories and S3 (moto)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from backup.cli import main as cli_main
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, new_stamp
from storage_backends import PermanentError
from storage_backends.local import LocalBackend

pytest_plugins = ["tests.support.backend_conformance"]  # s3_http, bucket: moto's S3 server on 127.0.0.1

NOW = datetime.now(timezone.utc)


def fake_backup(backend, volume: str, created: datetime, stamp: str | None = None) -> Manifest:
    backup_id = BackupId(volume, stamp or new_stamp(created))
    manifest = Manifest(backup_id, created, {}, "local", {}, "host", "id", "0", 1234, 10, "0" * 64, 1)
    backend.save(backup_id.archive_key, [b"archive"])
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest


def keys(backend) -> list[str]:
    return sorted(i.key for i in backend.list())


def both_keys(manifest: Manifest) -> list[str]:
    return sorted([manifest.backup_id.archive_key, manifest.backup_id.manifest_key])


@pytest.fixture
def store(tmp_path):
    return LocalBackend(tmp_path / "store")


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./volsafe.toml of the developer's
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_deletes_the_named_backups_manifest_first_and_leaves_the_others(store, cli, monkeypatch):
    a, b, c = (fake_backup(store, "db", NOW - timedelta(days=d)) for d in (2, 1, 0))
    other = fake_backup(store, "web", NOW)
    removed = []
    real_remove = LocalBackend.remove

    def remove(self, key):
        removed.append(key)
        return real_remove(self, key)

    monkeypatch.setattr(LocalBackend, "remove", remove)
    code, out, err = cli("delete", str(a.backup_id), str(c.backup_id), "--from", str(store.root))
    monkeypatch.undo()
    assert code == 0, err
    assert removed == [a.backup_id.manifest_key, a.backup_id.archive_key, c.backup_id.manifest_key, c.backup_id.archive_key]
    assert keys(store) == sorted(both_keys(b) + both_keys(other))
    header, *rows = out.splitlines()
    assert header.split() == ["ACTION", "ID", "CREATED", "SIZE", "BACKEND"]
    assert [r.split()[:2] for r in rows] == [["deleted", str(a.backup_id)], ["deleted", str(c.backup_id)]]
    assert "volsafe: deleted 2 backup(s)" in err
    code, out, _ = cli("list", "--from", str(store.root), "--json")
    assert sorted(r["id"] for r in json.loads(out)) == sorted([str(b.backup_id), str(other.backup_id)])


def test_a_missing_id_fails_before_anything_is_deleted(store, cli):
    kept = fake_backup(store, "db", NOW)
    before = keys(store)
    missing = f"db@{new_stamp(NOW - timedelta(days=9))}"
    code, out, err = cli("delete", str(kept.backup_id), missing, "--from", str(store.root))
    assert code == 1
    assert err.strip().splitlines() == [f"volsafe: error: no backup {missing} in {store.url}; nothing was deleted"]
    assert out == "" and keys(store) == before


@pytest.mark.parametrize("bad", ["db", "db@latest", "db@2024-01-01", "no/such@20240101T000000Z-abcd"])
def test_a_malformed_id_is_a_usage_error(store, cli, bad):
    fake_backup(store, "db", NOW)
    before = keys(store)
    code, _, err = cli("delete", bad, "--from", str(store.root))
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("volsafe: error: invalid ")
    assert keys(store) == before


def test_dry_run_shows_and_deletes_nothing(store, cli):
    doomed = fake_backup(store, "db", NOW)
    before = keys(store)
    code, out, err = cli("delete", str(doomed.backup_id), "--from", str(store.root), "--dry-run", "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["id"] == str(doomed.backup_id) and record["action"] == "delete" and record["size"] == 1234
    assert record["backend"] == store.url and record["volume"] == "db"
    assert "would delete 1 backup(s); nothing was deleted" in err
    assert keys(store) == before


def test_deletes_from_every_backend_that_holds_it_and_json(tmp_path, cli):
    first, second = LocalBackend(tmp_path / "one"), LocalBackend(tmp_path / "two")
    stamp = new_stamp(NOW)
    fake_backup(first, "db", NOW, stamp)
    fake_backup(second, "db", NOW, stamp)
    only_first = fake_backup(first, "db", NOW - timedelta(days=1))
    code, out, err = cli(
        "delete", f"db@{stamp}", str(only_first.backup_id), f"db@{stamp}",  # twice: deleted once
        "--from", str(first.root), "--from", str(second.root), "--json",
    )
    assert code == 0, err
    records = json.loads(out)
    assert [(r["id"], r["backend"], r["action"]) for r in records] == [
        (f"db@{stamp}", first.url, "deleted"), (f"db@{stamp}", second.url, "deleted"), (str(only_first.backup_id), first.url, "deleted"),
    ]
    assert keys(first) == [] and keys(second) == []


def test_a_damaged_manifest_can_still_be_deleted(store, cli):
    damaged = fake_backup(store, "db", NOW)
    store.save(damaged.backup_id.manifest_key, [b"{not json"])
    code, out, err = cli("delete", str(damaged.backup_id), "--from", str(store.root), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["action"] == "deleted" and json.loads(out)[0]["created"] is None
    assert keys(store) == []


def test_a_failed_removal_is_reported_and_the_archive_stays(store, cli, monkeypatch):
    doomed = fake_backup(store, "db", NOW)

    def refuse(self, key):
        raise PermanentError(f"cannot remove {key}")

    monkeypatch.setattr(LocalBackend, "remove", refuse)
    code, out, err = cli("delete", str(doomed.backup_id), "--from", str(store.root))
    assert code == 1
    assert f"volsafe: error: could not delete {doomed.backup_id} from {store.url}: cannot remove" in err
    assert keys(store) == both_keys(doomed)


def test_the_configured_backends_are_used_without_from(tmp_path, cli):
    store = LocalBackend(tmp_path / "nas")
    doomed = fake_backup(store, "db", NOW)
    config = tmp_path / "volsafe.toml"
    config.write_text(f'[backends.nas]\ntype = "local"\npath = "{store.root}"\n')
    code, out, err = cli("--config", str(config), "delete", str(doomed.backup_id))
    assert code == 0, err
    assert keys(store) == []
    code, _, err = cli("--config", str(config), "delete", str(doomed.backup_id), "--from", "nsa")
    assert code == 2 and "no backend named 'nsa'" in err


def test_delete_on_s3(bucket, cli):
    from storage_backends.s3 import S3Backend

    url = f"s3://{bucket}/backups"
    store = S3Backend.from_url(url)
    try:
        doomed, kept = fake_backup(store, "db", NOW - timedelta(days=1)), fake_backup(store, "db", NOW)
        code, out, err = cli("delete", str(doomed.backup_id), "--from", url, "--json")
        assert code == 0, err
        assert [(r["id"], r["action"]) for r in json.loads(out)] == [(str(doomed.backup_id), "deleted")]
        assert keys(store) == both_keys(kept)
        code, _, err = cli("delete", str(doomed.backup_id), "--from", url)
        assert code == 1 and f"no backup {doomed.backup_id} in {url}" in err
    finally:
        store.close()
