"""An encrypted backup's manifest keeps the plaintext's size, entry count and content digest only
sealed (age, to the archive's own recipients or passphrase): equal contents cannot be linked, nor a
guess confirmed, from the manifest. With the key, verify and restore still check all three; without
it, verify checks size and sha256. Manifests that keep them in the clear still work."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pyrage
import pytest

from backup.archive.codec import ArchiveStats, compress_tar, encrypted_stored
from backup.crypto.encryption import Passphrase, parse_recipients, seal_metadata
from backup.errors import ManifestError
from backup.archive.manifest import Manifest, parse_manifest
from backup.archive.naming import BackupId, new_stamp
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup
from tests.support.volume_tree import fill_tricky, snapshot

SECRET = "correct horse battery staple"


@pytest.fixture(autouse=True)
def no_passphrase_in_environment(monkeypatch):
    monkeypatch.delenv("VOLSAFE_PASSPHRASE", raising=False)


@pytest.fixture
def keys(tmp_path):
    """Two age identity files and their recipients."""
    made = {}
    for name in ("mine", "other"):
        identity = pyrage.x25519.Identity.generate()
        path = tmp_path / f"{name}.key"
        path.write_text(f"{identity}\n")
        made[name] = (path, str(identity.to_public()), identity)
    return made


def store_encrypted(backend, volume: str, tar: bytes, key, token: str) -> tuple[Manifest, ArchiveStats]:
    """Store ``tar`` encrypted for ``key`` with a manifest that seals its metadata, as ``backup`` does."""
    created = datetime.now(timezone.utc)
    backup_id = BackupId(volume, new_stamp(created, token))
    stats = ArchiveStats()
    backend.save(backup_id.archive_key, encrypted_stored(compress_tar([tar], stats, threads=1), key, stats))
    manifest = Manifest(
        backup_id=backup_id, created=created, volume_labels={}, volume_driver="local", volume_driver_opts={},
        source_hostname="test", source_docker_id="TEST", volsafe_version="test", tar_size=stats.tar_size,
        stored_size=stats.stored_size, sha256=stats.sha256, entries=stats.entries, content_digest=stats.content_digest,
        encryption_recipients=key.fingerprints, encryption_passphrase=key.by_passphrase,
    )
    manifest = seal_metadata(manifest, key)
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest, stats


def stored_json(root, manifest) -> dict:
    return json.loads((root / manifest.backup_id.manifest_key).read_text())


def _no_clear_metadata(data: dict, stats: ArchiveStats) -> None:
    text = json.dumps(data)
    assert data["format_version"] == 2
    for name in ("tar_size", "entries", "content_digest"):
        assert name not in data["archive"]
    assert stats.content_digest.split(":")[1] not in text
    assert data["archive"]["encryption"]["metadata"]


def test_recipient_manifest_keeps_no_plaintext_metadata_in_clear(tmp_path, keys):
    backend = LocalBackend(tmp_path / "s")
    manifest, stats = store_encrypted(backend, "db", make_tar(SAMPLE), parse_recipients([keys["mine"][1]]), "ec01")
    data = stored_json(tmp_path / "s", manifest)
    _no_clear_metadata(data, stats)
    # The sealed record is an age file for the same recipient, readable by hand.
    opened = json.loads(pyrage.decrypt(base64.b64decode(data["archive"]["encryption"]["metadata"]), [keys["mine"][2]]))
    assert opened == {"tar_size": stats.tar_size, "entries": stats.entries, "content_digest": stats.content_digest}
    parsed = parse_manifest((tmp_path / "s" / manifest.backup_id.manifest_key).read_bytes())
    assert (parsed.tar_size, parsed.entries, parsed.content_digest, parsed.sealed) == (None, None, "", True)
    assert parsed.to_json() == manifest.to_json()  # reads back and writes the same


def test_equal_contents_give_unlinkable_manifests(tmp_path, keys):
    backend = LocalBackend(tmp_path / "s")
    recipients = parse_recipients([keys["mine"][1]])
    one, _ = store_encrypted(backend, "db", make_tar(SAMPLE), recipients, "aaa1")
    two, _ = store_encrypted(backend, "db", make_tar(SAMPLE), recipients, "aaa2")
    a, b = stored_json(tmp_path / "s", one)["archive"], stored_json(tmp_path / "s", two)["archive"]
    assert a["encryption"].pop("metadata") != b["encryption"].pop("metadata")
    # What two manifests of equal contents may still share: the format, the key's fingerprint and
    # the stored (compressed, encrypted) size, which age's random padding stanza often varies too.
    same = {name for name in a if a[name] == b[name]}
    assert {"format", "compression", "compression_level", "encryption"} <= same
    assert same <= {"format", "compression", "compression_level", "encryption", "stored_size"}


def test_list_shows_no_plaintext_size_for_a_sealed_backup(run, tmp_path, keys):
    backend = LocalBackend(tmp_path / "s")
    store_encrypted(backend, "db", make_tar(SAMPLE), parse_recipients([keys["mine"][1]]), "ec01")
    code, out, err = run("list", "--from", str(tmp_path / "s"), "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["size"] is None and record["entries"] is None and record["stored_size"] > 0
    code, out, err = run("list", "--from", str(tmp_path / "s"))
    assert code == 0, err
    header, row = out.splitlines()
    assert row.split()[header.split().index("SIZE")] == "-"


def test_verify_with_and_without_the_key(run, tmp_path, keys):
    root = tmp_path / "s"
    store_encrypted(LocalBackend(root), "db", make_tar(SAMPLE), parse_recipients([keys["mine"][1]]), "ec01")
    code, out, _ = run("verify", "db", "--from", str(root))
    assert code == 0 and "size, sha256, encrypted: contents not checked without --identity" in out
    code, out, _ = run("verify", "db", "--from", str(root), "-i", str(keys["mine"][0]))
    assert code == 0 and f"tar ({len(SAMPLE)} entries)" in out and "content digest" in out, out
    code, out, _ = run("verify", "db", "--from", str(root), "-i", str(keys["other"][0]))
    assert code == 1 and "none of the given identities" in out


def test_resealed_metadata_that_lies_is_caught(run, tmp_path, keys):
    # Anyone can seal for a public recipient: a store writer who reseals other numbers gets a failed
    # verify, as with a lying clear manifest.
    root = tmp_path / "s"
    recipients = parse_recipients([keys["mine"][1]])
    manifest, stats = store_encrypted(LocalBackend(root), "db", make_tar(SAMPLE), recipients, "ec01")
    for lie, expected in (
        ({"entries": stats.entries + 1}, "entries, but its manifest says"),
        ({"content_digest": "tree-sha256:" + "0" * 64}, "content digest does not match"),
    ):
        data = stored_json(root, manifest)
        forged = {"tar_size": stats.tar_size, "entries": stats.entries, "content_digest": stats.content_digest, **lie}
        sealed = pyrage.encrypt(json.dumps(forged).encode(), list(recipients.keys))
        data["archive"]["encryption"]["metadata"] = base64.b64encode(sealed).decode()
        (root / manifest.backup_id.manifest_key).write_text(json.dumps(data))
        code, out, _ = run("verify", "db", "--from", str(root), "-i", str(keys["mine"][0]))
        assert code == 1 and expected in out, out


def test_passphrase_sealed_metadata_round_trip_and_tampering(run, tmp_path, monkeypatch):
    root = tmp_path / "s"
    manifest, stats = store_encrypted(LocalBackend(root), "db", make_tar(SAMPLE), Passphrase(SECRET.encode()), "a001")
    data = stored_json(root, manifest)
    _no_clear_metadata(data, stats)
    assert SECRET not in json.dumps(data)
    monkeypatch.setenv("VOLSAFE_PASSPHRASE", SECRET)
    code, out, _ = run("verify", "db", "--from", str(root))
    assert code == 0 and "content digest" in out, out
    sealed = bytearray(base64.b64decode(data["archive"]["encryption"]["metadata"]))
    sealed[-5] ^= 0x01  # in the payload: age's authentication fails
    data["archive"]["encryption"]["metadata"] = base64.b64encode(bytes(sealed)).decode()
    (root / manifest.backup_id.manifest_key).write_text(json.dumps(data))
    code, out, _ = run("verify", "db", "--from", str(root))
    assert code == 1 and "sealed metadata is corrupt or was tampered with" in out, out


def test_old_encrypted_manifests_with_clear_metadata_still_work(run, tmp_path, keys):
    root = tmp_path / "s"
    manifest = store_backup(LocalBackend(root), "db", make_tar(SAMPLE), stamp_token="0dd1", recipients=parse_recipients([keys["mine"][1]]))
    data = stored_json(root, manifest)
    assert data["format_version"] == 1 and data["archive"]["entries"] == len(SAMPLE)
    code, out, _ = run("verify", "db", "--from", str(root), "-i", str(keys["mine"][0]))
    assert code == 0 and "content digest" in out
    code, out, _ = run("list", "--from", str(root), "--json")
    assert json.loads(out)[0]["entries"] == len(SAMPLE)


def test_malformed_sealed_manifests_are_refused(tmp_path, keys):
    backend = LocalBackend(tmp_path / "s")
    manifest, _ = store_encrypted(backend, "db", make_tar(SAMPLE), parse_recipients([keys["mine"][1]]), "ec01")
    good = stored_json(tmp_path / "s", manifest)
    both = json.loads(json.dumps(good))
    both["archive"]["entries"] = 5
    not_base64 = json.loads(json.dumps(good))
    not_base64["archive"]["encryption"]["metadata"] = "not base64!"
    huge = json.loads(json.dumps(good))
    huge["archive"]["encryption"]["metadata"] = "A" * 100_000
    newer = json.loads(json.dumps(good))
    newer["format_version"] = 3
    for data, message in (
        (both, "both sealed and in the clear"), (not_base64, "not base64"), (huge, "not base64"), (newer, "upgrade volsafe"),
    ):
        with pytest.raises(ManifestError, match=message):
            parse_manifest(json.dumps(data))


@pytest.mark.docker
def test_backup_seals_and_restore_and_restore_test_open_it(docker_host, helper_image, volumes, volsafe, tmp_path, keys):
    source, copy = volumes("seal"), volumes("sealcopy")
    fill_tricky(docker_host, helper_image, source)
    before, _ = snapshot(docker_host, helper_image, source)
    key_path, recipient, _ = keys["mine"]
    store = tmp_path / "store"
    made = volsafe("backup", source, "--to", str(store), "--recipient", recipient, "--json")
    assert made.code == 0, made.err
    (record,) = json.loads(made.out)
    assert record["entries"] > 0  # the backup itself knows, and says so to whoever ran it
    stamp = record["id"].split("@")[1]
    data = json.loads((store / source / f"{stamp}.json").read_text())
    assert data["format_version"] == 2 and "tar_size" not in data["archive"] and "entries" not in data["archive"]
    assert "content_digest" not in data["archive"] and data["archive"]["encryption"]["metadata"]

    restored = volsafe("restore", source, "--from", str(store), "--to-volume", copy, "--identity", str(key_path))
    assert restored.code == 0, restored.err
    assert snapshot(docker_host, helper_image, copy)[0] == before
    verified = volsafe("verify", source, "--from", str(store), "--identity", str(key_path), "--restore-test")
    assert verified.code == 0 and "restore test" in verified.out and "content digest" in verified.out, verified.out + verified.err
