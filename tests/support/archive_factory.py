"""Test helper: store hand-made backups in a backend without Docker (tar built with Python's tarfile)."""

from __future__ import annotations

import io
import tarfile
from datetime import datetime, timezone

from backup.archive.codec import ArchiveStats, compress_tar, encrypted_stored
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, new_stamp


def make_tar(entries) -> bytes:
    """Return a tar of ``entries``: (name, type, data_or_linkname[, pax_headers]) tuples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            name, kind, payload = entry[:3]
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, 1_700_000_000, 0o755 if kind == tarfile.DIRTYPE else 0o644
            if len(entry) > 3:
                info.pax_headers = entry[3]
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
                tar.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return buf.getvalue()


SAMPLE = [
    (".", tarfile.DIRTYPE, b""),
    ("./dir", tarfile.DIRTYPE, b""),
    ("./dir/file.txt", tarfile.REGTYPE, b"hello\n" * 100),
    ("./abs-link", tarfile.SYMTYPE, "/etc/passwd"),
    ("./hard", tarfile.LNKTYPE, "./dir/file.txt"),
]


def store_backup(backend, volume: str, tar_bytes: bytes, *, stamp_token: str, recipients=None, created: datetime | None = None) -> Manifest:
    """Compress (and encrypt, with ``recipients``) ``tar_bytes``, store archive and manifest; return it.
    ``created`` (default: now) sets the backup's time, and so its id."""
    created = created if created is not None else datetime.now(timezone.utc)
    backup_id = BackupId(volume, new_stamp(created, stamp_token))
    stats = ArchiveStats()
    chunks = compress_tar([tar_bytes[i : i + 7000] for i in range(0, len(tar_bytes), 7000)], stats, threads=1)
    if recipients is not None:
        chunks = encrypted_stored(chunks, recipients, stats)
    backend.save(backup_id.archive_key, chunks)
    manifest = Manifest(
        backup_id=backup_id, created=created, volume_labels={}, volume_driver="local", volume_driver_opts={},
        source_hostname="test", source_docker_id="TEST", volsafe_version="test", tar_size=stats.tar_size,
        stored_size=stats.stored_size, sha256=stats.sha256, entries=stats.entries, content_digest=stats.content_digest,
        encryption_recipients=recipients.fingerprints if recipients is not None else None,
    )
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest
