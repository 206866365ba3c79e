"""Passphrase encryption through the CLI: backup, restore, verify, the config key, the messages, and
decryption by hand with `age -d | zstd -d | tar -x` on the stored archive."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone

import pyrage
import pytest

from backup.archive.codec import ArchiveStats, compress_tar, encrypted_stored
from backup.crypto.encryption import Passphrase
from backup.archive.manifest import Manifest, parse_manifest
from backup.archive.naming import BackupId, new_stamp
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar
from tests.unit.test_age_scrypt import run_with_passphrase
from tests.support.volume_tree import fill_tricky, snapshot
from tests.support.required import skip_or_fail

SECRET = "tr0ub4dor&3 with spaces"


@pytest.fixture(autouse=True)
def no_passphrase_in_environment(monkeypatch):
    monkeypatch.delenv("VOLSAFE_PASSPHRASE", raising=False)


@pytest.fixture
def passphrase_file(tmp_path):
    path = tmp_path / "passphrase"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def store_sealed(backend, volume: str, secret: str) -> Manifest:
    """Store a sample backup encrypted with ``secret`` (work factor 18, as volsafe writes); return it."""
    created = datetime.now(timezone.utc)
    backup_id = BackupId(volume, new_stamp(created, "cafe"))
    stats = ArchiveStats()
    tar = make_tar(SAMPLE)
    backend.save(backup_id.archive_key, encrypted_stored(compress_tar([tar], stats, threads=1), Passphrase(secret.encode()), stats))
    manifest = Manifest(
        backup_id=backup_id, created=created, volume_labels={}, volume_driver="local", volume_driver_opts={},
        source_hostname="test", source_docker_id="TEST", volsafe_version="test", tar_size=stats.tar_size,
        stored_size=stats.stored_size, sha256=stats.sha256, entries=stats.entries, content_digest=stats.content_digest,
        encryption_recipients=(), encryption_passphrase=True,
    )
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest


def test_manifest_records_a_passphrase_and_reads_back(tmp_path):
    manifest = store_sealed(LocalBackend(tmp_path / "s"), "db", SECRET)
    data = json.loads(manifest.to_json())
    # recipients stays, empty: older volsafe versions still list the backup (and cannot open it).
    assert data["archive"]["encryption"] == {"format": "age-encryption.org/v1", "recipients": [], "passphrase": True}
    back = parse_manifest(manifest.to_json())
    assert back.encrypted and back.encryption_passphrase and back.encryption_recipients == ()
    del data["archive"]["encryption"]["recipients"]
    assert parse_manifest(json.dumps(data)).encryption_passphrase
    data["archive"]["encryption"] = {"format": "age-encryption.org/v1", "recipients": ["SHA256:x"]}
    old = parse_manifest(json.dumps(data))  # a recipients manifest, as older versions wrote it
    assert old.encrypted and not old.encryption_passphrase


def test_verify_with_env_file_config_missing_and_wrong_passphrase(run, tmp_path, passphrase_file, monkeypatch):
    store = tmp_path / "s"
    manifest = store_sealed(LocalBackend(store), "db", SECRET)
    text = (store / manifest.backup_id.manifest_key).read_text()
    assert SECRET not in text and json.loads(text)["archive"]["encryption"]["passphrase"] is True

    code, out, err = run("verify", "db", "--from", str(store), "--passphrase-file", str(passphrase_file))
    assert code == 0 and "age, zstd" in out and "content digest" in out, out + err
    code, out, _ = run("verify", "db", "--from", str(store))
    assert code == 0 and "contents not checked without --passphrase-file or VOLSAFE_PASSPHRASE" in out

    config = tmp_path / "volsafe.toml"
    config.write_text(f'[encryption]\npassphrase_file = "{passphrase_file}"\n')
    code, out, err = run("--config", str(config), "verify", "db", "--from", str(store))
    assert code == 0 and "age, zstd" in out, out + err

    monkeypatch.setenv("VOLSAFE_PASSPHRASE", "wrong horse")
    code, out, err = run("--debug", "verify", "db", "--from", str(store))
    assert code == 1 and "wrong passphrase" in out and "wrong horse" not in out + err
    monkeypatch.setenv("VOLSAFE_PASSPHRASE", SECRET)
    code, out, err = run("--debug", "verify", "db", "--from", str(store))
    assert code == 0 and "age, zstd" in out and SECRET not in out + err


def test_recipients_and_passphrase_together_is_one_line_error(run, tmp_path, passphrase_file):
    recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    code, out, err = run("backup", "db", "--to", str(tmp_path / "s"), "-r", recipient, "--passphrase-file", str(passphrase_file))
    assert code != 0 and "not both" in err and len(err.strip().splitlines()) <= 2, err  # a progress line may precede
    assert SECRET not in err + out


def test_unreadable_or_empty_passphrase_file(run, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\nsecond line\n")
    code, _, err = run("verify", "db", "--from", str(tmp_path), "--passphrase-file", str(empty))
    assert code != 0 and "first line is empty" in err and "second line" not in err
    code, _, err = run("verify", "db", "--from", str(tmp_path), "--passphrase-file", str(tmp_path / "missing"))
    assert code != 0 and "cannot read passphrase file" in err


@pytest.mark.docker
def test_passphrase_backup_restores_with_volsafe_and_by_hand(docker_host, helper_image, volumes, volsafe, tmp_path, passphrase_file, monkeypatch):
    source, copy, never = volumes("pp"), volumes("ppcopy"), volumes("ppnokey")
    fill_tricky(docker_host, helper_image, source)
    before, links = snapshot(docker_host, helper_image, source)
    store = tmp_path / "store"

    made = volsafe("--debug", "backup", source, "--to", str(store), "--passphrase-file", str(passphrase_file), "--json")
    assert made.code == 0, made.err
    assert SECRET not in made.out + made.err
    (record,) = json.loads(made.out)
    stamp = record["id"].split("@")[1]
    archive = store / source / f"{stamp}.tar.zst"
    assert archive.read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt ")
    manifest_text = (store / source / f"{stamp}.json").read_text()
    assert SECRET not in manifest_text
    encryption = json.loads(manifest_text)["archive"]["encryption"]
    assert encryption.pop("metadata")  # tar size, entries and content digest, sealed with the passphrase
    assert encryption == {"format": "age-encryption.org/v1", "recipients": [], "passphrase": True}

    # Without a passphrase, with an identity only, or with the wrong one: one clear line, no volume.
    identity = tmp_path / "id.key"
    identity.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    for extra, env, expected in (
        ([], None, "is encrypted with a passphrase: give --passphrase-file FILE or set VOLSAFE_PASSPHRASE"),
        (["--identity", str(identity)], None, "is encrypted with a passphrase: give --passphrase-file FILE or set VOLSAFE_PASSPHRASE"),
        ([], "not the passphrase", "wrong passphrase"),
    ):
        if env is None:
            monkeypatch.delenv("VOLSAFE_PASSPHRASE", raising=False)
        else:
            monkeypatch.setenv("VOLSAFE_PASSPHRASE", env)
        failed = volsafe("restore", source, "--from", str(store), "--to-volume", never, *extra)
        assert failed.code == 1 and expected in failed.err, failed.err
        assert failed.err.strip().splitlines()[-1].startswith("volsafe: error:")
        assert not docker_host.volume_exists(never)
        assert "not the passphrase" not in failed.err + failed.out

    monkeypatch.setenv("VOLSAFE_PASSPHRASE", SECRET)
    restored = volsafe("--debug", "restore", source, "--from", str(store), "--to-volume", copy)
    assert restored.code == 0, restored.err
    assert SECRET not in restored.err + restored.out
    after, after_links = snapshot(docker_host, helper_image, copy)
    assert after == before and after_links == links

    # By hand, with the reference age CLI (it reads the passphrase from the terminal only).
    if shutil.which("age") is None:
        skip_or_fail("the age CLI is not installed (scripts/lib.sh installs it)")
    out = tmp_path / "out"
    out.mkdir()
    code, said = run_with_passphrase(["sh", "-c", f"age -d '{archive}' | zstd -d | tar -x -C '{out}'"], SECRET)
    assert code == 0, said
    assert (out / "dir" / "sub" / "file.txt").read_text() == "hello\n"
    assert (out / "dir" / "blob.bin").stat().st_size == before["dir/blob.bin"].size


def test_tampered_passphrase_archive_fails_verify(run, tmp_path, monkeypatch):
    store = tmp_path / "s"
    manifest = store_sealed(LocalBackend(store), "db", SECRET)
    path = store / manifest.backup_id.archive_key
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x40
    path.write_bytes(bytes(data))
    stored = json.loads((store / manifest.backup_id.manifest_key).read_text())
    stored["archive"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # an attacker who fixes the manifest too
    (store / manifest.backup_id.manifest_key).write_text(json.dumps(stored))
    monkeypatch.setenv("VOLSAFE_PASSPHRASE", SECRET)
    code, out, _ = run("verify", "db", "--from", str(store))
    assert code == 1 and "tampered" in out and "fails authentication" in out, out
