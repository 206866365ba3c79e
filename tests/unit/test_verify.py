"""volsafe verify without Docker: each kind of damage is caught, one line per backup, exit 1."""

from __future__ import annotations

import json
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup


@pytest.fixture
def store(tmp_path):
    """Two backups of volume "db" and one of "web" in a fresh local backend."""
    backend = LocalBackend(tmp_path / "store")
    first = store_backup(backend, "db", make_tar(SAMPLE), stamp_token="0001")
    second = store_backup(backend, "db", make_tar(SAMPLE + [("./more", tarfile.REGTYPE, b"x" * 5000)]), stamp_token="0002")
    web = store_backup(backend, "web", make_tar(SAMPLE), stamp_token="0003")
    return tmp_path / "store", first, second, web


def _lines(out: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in out.splitlines()[1:]}


def test_intact_backups_verify(run, store):
    root, first, second, web = store
    code, out, err = run("verify", "--all", "--from", str(root))
    assert code == 0, err
    assert _lines(out) == {str(first.backup_id): "ok", str(second.backup_id): "ok", str(web.backup_id): "ok"}
    assert "content digest" in out
    code, out, _ = run("verify", "db", "--from", str(root), "--json")
    (record,) = json.loads(out)
    assert code == 0 and record["id"] == str(second.backup_id) and record["ok"] is True


def _archive(root: Path, manifest) -> Path:
    return root / manifest.backup_id.archive_key


def _flip_byte(root, first, second):
    path = _archive(root, first)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return first, ("sha256 mismatch", "corrupt")  # zstd's own checksum may notice first


def _truncate(root, first, second):
    path = _archive(root, first)
    path.write_bytes(path.read_bytes()[:-40])
    return first, ("bytes, but its manifest says",)


def _delete_manifest(root, first, second):
    (root / first.backup_id.manifest_key).unlink()
    return first, ("manifest is missing",)


def _swap_archives(root, first, second):
    shutil.copyfile(_archive(root, second), _archive(root, first))
    return first, ("but its manifest says",)


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _delete_manifest, _swap_archives])
def test_each_kind_of_damage_is_caught(run, store, damage):
    root, first, second, web = store
    broken, messages = damage(root, first, second)
    code, out, err = run("verify", "--all", "--from", str(root))
    assert code == 1
    lines = out.splitlines()[1:]
    assert len(lines) == 3  # one line per backup, the broken one included
    assert _lines(out) == {str(broken.backup_id): "FAILED", str(second.backup_id): "ok", str(web.backup_id): "ok"}
    line = next(line for line in lines if str(broken.backup_id) in line)
    assert any(m in line for m in messages), line


def test_swapped_archives_of_equal_size_are_caught_by_checksum(run, tmp_path):
    backend = LocalBackend(tmp_path)
    # Incompressible data of one length: both archives come out the same size.
    noise = random.Random(7).randbytes(4000)
    a = store_backup(backend, "db", make_tar([("./x", tarfile.REGTYPE, noise)]), stamp_token="000a")
    b = store_backup(backend, "db", make_tar([("./x", tarfile.REGTYPE, noise[::-1])]), stamp_token="000b")
    assert a.stored_size == b.stored_size
    pa, pb = tmp_path / a.backup_id.archive_key, tmp_path / b.backup_id.archive_key
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    code, out, _ = run("verify", str(a.backup_id), str(b.backup_id), "--from", str(tmp_path))
    assert code == 1 and out.count("FAILED") == 2 and "sha256 mismatch" in out


def test_exact_id_with_deleted_manifest_and_unknown_id(run, store):
    root, first, second, web = store
    (root / first.backup_id.manifest_key).unlink()
    code, out, _ = run("verify", str(first.backup_id), "--from", str(root))
    assert code == 1 and "manifest is missing (the archive is there)" in out
    code, out, _ = run("verify", "db@20000101T000000Z-dead", "--from", str(root))
    assert code == 1 and "no such backup" in out


def test_content_digest_mismatch_is_caught(run, store):
    # A manifest rewritten to another digest (archive intact) must fail: the digest is checked.
    root, first, *_ = store
    path = root / first.backup_id.manifest_key
    data = json.loads(path.read_text())
    data["archive"]["content_digest"] = "tree-sha256:" + "0" * 64
    path.write_text(json.dumps(data))
    code, out, _ = run("verify", str(first.backup_id), "--from", str(root))
    assert code == 1 and "content digest does not match" in out


def test_verify_needs_refs_or_all(run, tmp_path):
    code, _, err = run("verify", "--from", str(tmp_path))
    assert code == 2 and "give one or more REFs, or --all" in err
    code, _, err = run("verify", "../etc", "--from", str(tmp_path))
    assert code == 2 and "invalid volume name" in err


def test_verify_all_of_a_missing_or_empty_backend_fails(run, tmp_path):
    # An unmounted NAS (a missing directory, or an empty mount point) must not pass a cron check.
    missing, empty = tmp_path / "nas-not-mounted", tmp_path / "mnt"
    empty.mkdir()
    code, out, err = run("verify", "--all", "--from", str(missing))
    assert (code, out) == (1, "")
    assert err == f"volsafe: error: no backups found in {missing.as_uri()} (no such directory: is it mounted?)\n"
    assert not missing.exists()  # verify creates nothing
    for args in ([], ["--json"]):
        code, out, err = run("verify", "--all", "--from", str(empty), *args)
        assert code == 1
        assert err == f"volsafe: error: no backups found in {empty.as_uri()}\n"


def test_verify_all_fails_naming_the_empty_backend_after_checking_the_others(run, store, tmp_path):
    root, first, second, web = store
    empty = tmp_path / "usb"
    empty.mkdir()
    code, out, err = run("verify", "--all", "--from", str(root), "--from", str(empty))
    assert code == 1
    assert _lines(out) == {str(first.backup_id): "ok", str(second.backup_id): "ok", str(web.backup_id): "ok"}
    assert err == f"volsafe: error: no backups found in {empty.as_uri()}\n"
