"""age encryption: streaming round trip, wrong and missing keys, tampering, by hand with the age CLI."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import threading

import pyrage
import pytest

from backup.crypto.encryption import DecryptingReader, EncryptionError, encrypt_chunks, parse_recipients, read_identities
from backup.errors import IntegrityError
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup
from tests.support.threads import DEADLINE, Running, blocked
from tests.support.volume_tree import fill_tricky, snapshot


@pytest.fixture
def keys(tmp_path):
    """An age identity file and its recipient, and a second, unrelated identity file."""
    made = {}
    for name in ("mine", "other"):
        identity = pyrage.x25519.Identity.generate()
        path = tmp_path / f"{name}.key"
        path.write_text(f"# created: test\n# public key: {identity.to_public()}\n{identity}\n")
        path.chmod(0o600)
        made[name] = (path, str(identity.to_public()), str(identity))
    return made


def test_encrypt_and_decrypt_stream_many_chunks(keys):
    _, recipient, _ = keys["mine"]
    plain = [bytes([i]) * 300_000 for i in range(40)]  # 12 MB in chunks
    stored = b"".join(encrypt_chunks(iter(plain), parse_recipients([recipient])))
    assert stored.startswith(b"age-encryption.org/v1\n")
    reader = DecryptingReader(io.BytesIO(stored), read_identities([str(keys["mine"][0])]))
    assert reader.read() == b"".join(plain)


def test_bad_recipient_is_one_clear_line_without_the_text():
    with pytest.raises(EncryptionError, match="not an age") as info:
        parse_recipients(["age1notakey-SECRETISH"])
    assert "SECRETISH" not in str(info.value)


def test_verify_encrypted_backup_with_and_without_key_and_tampered(run, tmp_path, keys):
    backend = LocalBackend(tmp_path / "s")
    manifest = store_backup(backend, "db", make_tar(SAMPLE), stamp_token="ec01", recipients=parse_recipients([keys["mine"][1]]))
    stored = json.loads((tmp_path / "s" / manifest.backup_id.manifest_key).read_text())
    assert stored["archive"]["encryption"] == {"format": "age-encryption.org/v1", "recipients": [manifest.encryption_recipients[0]]}
    assert manifest.encryption_recipients[0].startswith("SHA256:") and keys["mine"][1] not in json.dumps(stored)

    code, out, _ = run("verify", "db", "--from", str(tmp_path / "s"), "-i", str(keys["mine"][0]))
    assert code == 0 and "age, zstd" in out and "content digest" in out
    code, out, _ = run("verify", "db", "--from", str(tmp_path / "s"))
    assert code == 0 and "contents not checked without --identity" in out
    code, out, _ = run("verify", "db", "--from", str(tmp_path / "s"), "-i", str(keys["other"][0]))
    assert code == 1 and "none of the given identities" in out

    # Tampering inside the ciphertext: age's authentication (and the sha256) catch it.
    path = tmp_path / "s" / manifest.backup_id.archive_key
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x40
    path.write_bytes(bytes(data))
    stored["archive"]["sha256"] = __import__("hashlib").sha256(bytes(data)).hexdigest()  # an attacker who fixes the manifest too
    (tmp_path / "s" / manifest.backup_id.manifest_key).write_text(json.dumps(stored))
    code, out, _ = run("verify", "db", "--from", str(tmp_path / "s"), "-i", str(keys["mine"][0]))
    assert code == 1 and "tampered" in out


@pytest.mark.docker
def test_encrypted_backup_restores_with_volsafe_and_by_hand(docker_host, helper_image, volumes, volsafe, tmp_path, keys):
    source, copy, never = volumes("enc"), volumes("enccopy"), volumes("nokey")
    fill_tricky(docker_host, helper_image, source)
    before, _ = snapshot(docker_host, helper_image, source)
    key_path, recipient, secret = keys["mine"]
    store = tmp_path / "store"

    made = volsafe("--debug", "backup", source, "--to", str(store), "--recipient", recipient, "--json")
    assert made.code == 0, made.err
    (record,) = json.loads(made.out)
    archive = store / source / (record["id"].split("@")[1] + ".tar.zst")
    assert archive.read_bytes().startswith(b"age-encryption.org/v1\n")

    # Without the key, or with the wrong one: one clear line, and no volume is created.
    for extra in ([], ["--identity", str(keys["other"][0])]):
        failed = volsafe("--debug", "restore", source, "--from", str(store), "--to-volume", never, *extra)
        assert failed.code == 1 and ("is encrypted: give --identity" in failed.err or "none of the given identities" in failed.err)
        assert not docker_host.volume_exists(never)
        assert secret not in failed.err + failed.out and keys["other"][2] not in failed.err

    restored = volsafe("--debug", "restore", source, "--from", str(store), "--to-volume", copy, "--identity", str(key_path))
    assert restored.code == 0, restored.err
    assert secret not in restored.err + restored.out
    after, _ = snapshot(docker_host, helper_image, copy)
    assert after == before

    verified = volsafe("verify", source, "--from", str(store), "--identity", str(key_path), "--restore-test")
    assert verified.code == 0 and "restore test" in verified.out, verified.out + verified.err

    # By hand, with the reference age CLI.
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(f"age -d -i '{key_path}' '{archive}' | zstd -d | tar -x -C '{out}'", shell=True, check=True)
    assert (out / "dir" / "sub" / "file.txt").read_text() == "hello\n"
    assert (out / "dir" / "blob.bin").stat().st_size == before["dir/blob.bin"].size


# The worker threads: every way one side leaves must end the other, never leave it waiting. Whatever
# waits on a worker runs in a helper thread joined with a deadline (``Running``), so a hang fails fast.


def _recipients_and_identities():
    identity = pyrage.x25519.Identity.generate()
    return parse_recipients([str(identity.to_public())]), [identity]


def _endless(read: list):
    for n in itertools.count():
        read.append(n)
        yield bytes([n % 256]) * 100_000


def _worker(before: set, name: str) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t not in before and t.name == name]
    return thread


def test_closing_the_encryption_early_ends_its_worker_and_stops_reading_the_source():
    recipients, _ = _recipients_and_identities()
    before, read = set(threading.enumerate()), []
    encrypted = encrypt_chunks(_endless(read), recipients)
    assert Running(lambda: next(encrypted)).finish().startswith(b"age-encryption.org/v1\n")
    worker = _worker(before, "age-encrypt")
    encrypted.close()
    worker.join(DEADLINE)
    assert not worker.is_alive()
    assert len(read) < 20  # the input channel's 8, what pyrage and the output held, and no more


def test_a_failing_source_propagates_and_ends_the_worker():
    recipients, _ = _recipients_and_identities()
    before = set(threading.enumerate())

    def source():
        yield b"a" * 100_000
        raise RuntimeError("docker stream broke")

    with pytest.raises(RuntimeError, match="docker stream broke"):
        Running(lambda: list(encrypt_chunks(source(), recipients))).finish()
    assert not [t for t in threading.enumerate() if t not in before and t.name == "age-encrypt"]  # joined on the way out


def test_a_failing_worker_reaches_a_producer_waiting_on_the_full_input(monkeypatch):
    recipients, _ = _recipients_and_identities()
    saw = []

    def failing_encrypt_io(reader, writer, keys):
        reader.read(10)
        blocked(reader.channel._writable)  # the consumer's next put waits for room
        saw.append(len(reader.channel))
        raise ValueError("rage gave up")

    monkeypatch.setattr(pyrage, "encrypt_io", failing_encrypt_io)
    run = Running(lambda: list(encrypt_chunks(_endless([]), recipients)))
    with pytest.raises(EncryptionError, match="age encryption failed: ValueError"):
        run.finish()
    assert saw == [8]  # the input channel was full: the producer was waiting when the worker failed


def test_closing_a_decrypting_reader_early_ends_a_worker_waiting_on_the_full_channel():
    recipients, identities = _recipients_and_identities()
    plain = [bytes([i]) * 1_000_000 for i in range(20)]
    stored = b"".join(Running(lambda: list(encrypt_chunks(iter(plain), recipients))).finish())
    reader = DecryptingReader(io.BytesIO(stored), identities)
    assert Running(lambda: reader.read(10)).finish() == b"\0" * 10
    blocked(reader.channel._writable)  # the worker decrypted ahead until the channel filled up
    reader.close()
    assert not reader._thread.is_alive()


def test_a_cut_short_ciphertext_is_an_integrity_error_and_ends_the_worker():
    recipients, identities = _recipients_and_identities()
    stored = b"".join(Running(lambda: list(encrypt_chunks(iter([b"z" * 300_000]), recipients))).finish())
    reader = DecryptingReader(io.BytesIO(stored[:-100]), identities)
    with pytest.raises(IntegrityError, match="truncated"):
        Running(reader.read).finish()
    reader._thread.join(DEADLINE)
    assert not reader._thread.is_alive()
    reader.close()


def test_a_wrong_identity_is_one_clear_error():
    recipients, _ = _recipients_and_identities()
    _, others = _recipients_and_identities()
    stored = b"".join(Running(lambda: list(encrypt_chunks(iter([b"z" * 1000]), recipients))).finish())
    with DecryptingReader(io.BytesIO(stored), others) as reader, pytest.raises(EncryptionError, match="none of the given identities"):
        Running(reader.read).finish()
