"""Pure naming rules: backup ids, object keys, volume names and the REF syntax of ``restore``.

A backup id is ``VOLUME@STAMP`` where STAMP is ``YYYYMMDDTHHMMSSZ-xxxx`` (UTC time plus four random
hex digits, so that two backups in the same second differ). Docker volume names cannot contain
``@``, so splitting a REF at its last ``@`` is unambiguous.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from backup.errors import UsageError

# Docker's own rule for volume names (daemon/names: RestrictedNamePattern).
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # matched whole (fullmatch): "$" would accept a trailing newline
STAMP = re.compile(r"(\d{8}T\d{6}Z)-([0-9a-f]{4})")
ARCHIVE_SUFFIX = ".tar.zst"
MANIFEST_SUFFIX = ".json"
LATEST = "latest"


def validate_volume_name(name: str) -> str:
    """Return ``name`` if Docker accepts it as a volume name; raise UsageError if not."""
    if not isinstance(name, str) or len(name) > 255 or not VOLUME_NAME.fullmatch(name):
        raise UsageError(
            f"invalid volume name {name!r}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return name


def new_stamp(now: datetime, token: str | None = None) -> str:
    """Return a fresh STAMP for a backup taken at ``now`` (an aware datetime)."""
    token = token if token is not None else secrets.token_hex(2)
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{token}"


@dataclass(frozen=True)
class BackupId:
    """A parsed backup id: the volume and the stamp."""

    volume: str
    stamp: str

    def __str__(self) -> str:
        return f"{self.volume}@{self.stamp}"

    @property
    def archive_key(self) -> str:
        """Return the object key of the archive, relative to the backend root."""
        return f"{self.volume}/{self.stamp}{ARCHIVE_SUFFIX}"

    @property
    def manifest_key(self) -> str:
        """Return the object key of the manifest, relative to the backend root."""
        return f"{self.volume}/{self.stamp}{MANIFEST_SUFFIX}"


def parse_backup_id(text: str) -> BackupId:
    """Return the BackupId that ``text`` spells exactly; raise UsageError if it is not one."""
    volume, sep, stamp = text.rpartition("@")
    if not sep or not STAMP.fullmatch(stamp):
        raise UsageError(f"invalid backup id {text!r}: expected VOLUME@YYYYMMDDTHHMMSSZ-xxxx")
    validate_volume_name(volume)
    return BackupId(volume, stamp)


def backup_id_from_manifest_key(key: str) -> BackupId | None:
    """Return the BackupId whose manifest is stored under ``key``, or None for any other key."""
    volume, sep, name = key.partition("/")
    if not sep or "/" in name or not name.endswith(MANIFEST_SUFFIX):
        return None
    stamp = name[: -len(MANIFEST_SUFFIX)]
    if not STAMP.fullmatch(stamp) or not VOLUME_NAME.fullmatch(volume):
        return None
    return BackupId(volume, stamp)


def backup_id_from_archive_key(key: str) -> BackupId | None:
    """Return the BackupId whose archive is stored under ``key``, or None for any other key."""
    if not key.endswith(ARCHIVE_SUFFIX):
        return None
    return backup_id_from_manifest_key(key[: -len(ARCHIVE_SUFFIX)] + MANIFEST_SUFFIX)


@dataclass(frozen=True)
class Ref:
    """What a user asked to restore: the newest backup of a volume, or one exact backup."""

    volume: str
    backup_id: BackupId | None  # None means "the newest backup of volume"


def parse_ref(text: str) -> Ref:
    """Parse ``VOLUME``, ``VOLUME@latest`` or ``VOLUME@STAMP`` (an id as ``list`` prints it).

    Returns a Ref; raises UsageError on anything else.
    """
    volume, sep, tag = text.rpartition("@")
    if not sep:
        return Ref(validate_volume_name(text), None)
    if tag == LATEST:
        return Ref(validate_volume_name(volume), None)
    backup_id = parse_backup_id(text)
    return Ref(backup_id.volume, backup_id)


def mount_storage_name(container: str, destination: str) -> str:
    """Return the stable storage name of a container's bind or tmpfs mount: ``CONTAINER.DEST``.

    DEST is the mount's path in the container without its leading ``/``, with ``/`` turned into
    ``_`` and any other character Docker does not allow in volume names into ``-`` (``/`` itself
    is ``root``): container ``web``, ``/var/lib/data`` -> ``web.var_lib_data``. The result is a
    valid volume name, so backups of the mount are listed, pruned and restored like a volume's.
    """
    slug = re.sub(r"[^a-zA-Z0-9_.-]", "-", destination.strip("/").replace("/", "_")) or "root"
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", container.lstrip("/"))
    return validate_volume_name(f"{name}.{slug}"[:255])


def stamp_time(stamp: str) -> datetime:
    """Return the aware UTC time a STAMP records (to the second). Raises UsageError if it is not a STAMP."""
    match = STAMP.fullmatch(stamp)
    if not match:
        raise UsageError(f"invalid backup stamp {stamp!r}")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
