"""The manifest's tar size bounds what an archive may decompress to: a zstd bomb (a small archive
whose tar is huge) stops as soon as the tar passes it, before anything past it is scanned or
extracted, and a tar that ends short of it is refused."""

from __future__ import annotations

import pytest

import backup.archive.codec as codec
from backup.archive.codec import checked_backup_tar
from backup.errors import IntegrityError
from backup.archive.tar.scanner import TarScanner
from storage_backends.local import LocalBackend
from tests.support.crafted_tars import END, entry, header, store_crafted
from tests.support.volume_tree import run_in_volume

MiB = 1 << 20
DECLARED = 10240  # what the bomb's manifest says: a tar of one small file


def bomb(size: int):
    """Yield a tar holding one file of ``size`` zero bytes (zstd shrinks it about 30,000 times)."""
    yield header(b"bomb", size=size)
    zeros = bytes(MiB)
    for _ in range(size // MiB):
        yield zeros
    yield END


def _read(backend, manifest) -> bytes:
    with backend.open(manifest.backup_id.archive_key) as stored:
        return b"".join(checked_backup_tar(stored, manifest, decrypt=None))


def test_bomb_stops_at_the_declared_tar_size(tmp_path, monkeypatch):
    backend = LocalBackend(tmp_path)
    manifest = store_crafted(backend, "bomb", bomb(64 * MiB), stamp_token="b0b0", tar_size=DECLARED)
    assert manifest.stored_size < 64 * 1024
    scanners = []

    class Counting(TarScanner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            scanners.append(self)

    monkeypatch.setattr(codec, "TarScanner", Counting)
    yielded = 0
    with backend.open(manifest.backup_id.archive_key) as stored:
        with pytest.raises(IntegrityError, match=f"decompresses to more than the {DECLARED} bytes"):
            for chunk in checked_backup_tar(stored, manifest, decrypt=None):
                yielded += len(chunk)
    assert yielded <= DECLARED
    assert scanners[0].tar_size <= DECLARED  # the chunk that went past it was never even scanned


def test_a_tar_shorter_than_declared_is_refused(tmp_path):
    backend = LocalBackend(tmp_path)
    tar = entry(b"f", b"data\n") + END
    manifest = store_crafted(backend, "short", [tar], stamp_token="5407", tar_size=len(tar) + 512)
    with pytest.raises(IntegrityError, match=f"holds a tar of {len(tar)} bytes, but its manifest says {len(tar) + 512}"):
        _read(backend, manifest)


def test_the_declared_size_is_exact_for_a_real_archive(tmp_path):
    backend = LocalBackend(tmp_path)
    tar = entry(b"f", b"data\n") + END + bytes(10240 - 2048)  # with GNU tar's record padding
    manifest = store_crafted(backend, "exact", [tar], stamp_token="e0e0")
    assert manifest.tar_size == len(tar)
    assert _read(backend, manifest)  # the re-emitted stream: the entry and an end marker


@pytest.mark.docker
def test_restore_and_verify_of_a_zstd_bomb_commit_nothing(docker_host, helper_image, volumes, volsafe, tmp_path):
    backend = LocalBackend(tmp_path)
    # About 16 KB stored, 513 MiB of tar, 10,240 bytes declared: the archive of the report.
    manifest = store_crafted(backend, "bomb", bomb(513 * MiB), stamp_token="b0b1", tar_size=DECLARED)
    assert manifest.stored_size < 64 * 1024
    message = f"decompresses to more than the {DECLARED} bytes of tar its manifest records"

    verified = volsafe("verify", str(manifest.backup_id), "--from", str(tmp_path))
    assert verified.code == 1 and "FAILED" in verified.out and message in verified.out

    fresh = volumes("bomb")
    created = volsafe("restore", str(manifest.backup_id), "--from", str(tmp_path), "--to-volume", fresh)
    assert created.code == 1 and message in created.err
    assert not docker_host.volume_exists(fresh)

    existing = volumes("keep")
    docker_host.api.create_volume(existing)
    listing = "cd /v && ls -laR --full-time . | grep -v ' [.][.]$' | sort && du -s ."
    run_in_volume(docker_host, helper_image, existing, "echo original > /v/data")
    before = run_in_volume(docker_host, helper_image, existing, listing)
    forced = volsafe("restore", str(manifest.backup_id), "--from", str(tmp_path), "--to-volume", existing, "--force")
    assert forced.code == 1 and message in forced.err
    assert run_in_volume(docker_host, helper_image, existing, listing) == before
