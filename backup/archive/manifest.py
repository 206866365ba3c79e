"""The JSON manifest stored beside every archive: what was backed up, from where, and how to check it.

Pure: no I/O. ``Manifest.to_json`` writes it, ``parse_manifest`` reads and validates it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from backup.bounds import MAX_DEPTH, json_depth_exceeds
from backup.errors import ManifestError
from backup.archive.naming import BackupId, parse_backup_id

FORMAT = "volsafe-manifest"
FORMAT_VERSION = 1  # new optional fields (content_digest, encryption) keep version 1 readable both ways
# An encrypted backup's manifest keeps tar_size, entries and content_digest only sealed (age, to the
# archive's own recipients or passphrase) in ``archive.encryption.metadata``. Such a manifest says
# version 2: volsafe before 2 requires the clear fields, and so refuses it with "upgrade volsafe".
SEALED_FORMAT_VERSION = 2
MAX_SEALED_SIZE = 16 * 1024  # base64 characters; the sealed JSON is under 200 bytes
AGE_FORMAT = "age-encryption.org/v1"
# Real manifests are about 1 KiB; ``load_manifest`` reads at most this much of one.
MAX_MANIFEST_SIZE = 1 << 20
_CONTENT_DIGEST = re.compile(r"^tree-sha256:[0-9a-f]{64}\Z")  # \Z: "$" would accept a trailing newline


@dataclass(frozen=True)
class Manifest:
    """One backup's metadata. ``created`` is an aware UTC datetime."""

    backup_id: BackupId
    created: datetime
    volume_labels: dict[str, str]
    volume_driver: str
    volume_driver_opts: dict[str, str]
    source_hostname: str
    source_docker_id: str
    volsafe_version: str
    # None in a manifest read from a store while its sealed metadata is not opened (``sealed``).
    tar_size: int | None
    stored_size: int
    sha256: str
    entries: int | None
    compression: str = "zstd"
    compression_level: int = 3
    # Digest of the tar entries' metadata and data (``tree-sha256:…``); "" in manifests made before it.
    content_digest: str = ""
    # Fingerprints of the age recipients, if the archive is age-encrypted; None if it is not.
    encryption_recipients: tuple[str, ...] | None = None
    # True if the archive is age-encrypted with a passphrase (age's scrypt recipient), which is then
    # its only recipient: ``encryption_recipients`` is (). The passphrase itself is never recorded.
    encryption_passphrase: bool = False
    # For ``backup --container``: {"type": volume|bind|tmpfs, "source", "destination", "container"}.
    mount: dict[str, str] | None = None
    # Path patterns left out of the archive (``--exclude PATTERN``); empty when nothing was.
    excluded_paths: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # Base64 of the age encryption of ``sealed_fields()`` JSON, for an encrypted backup; "" if the
    # manifest keeps those fields in the clear (not encrypted, or made before volsafe sealed them).
    sealed_metadata: str = ""

    @property
    def encrypted(self) -> bool:
        return self.encryption_recipients is not None or self.encryption_passphrase

    @property
    def volume(self) -> str:
        return self.backup_id.volume

    @property
    def sealed(self) -> bool:
        """True if tar_size, entries and content_digest are stored only encrypted."""
        return bool(self.sealed_metadata)

    def sealed_fields(self) -> bytes:
        """Return the JSON of what an encrypted backup's manifest keeps sealed."""
        return json.dumps({"tar_size": self.tar_size, "entries": self.entries, "content_digest": self.content_digest}).encode()

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as the JSON-ready dict that is stored."""
        clear = not self.sealed
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if clear else SEALED_FORMAT_VERSION,
            "id": str(self.backup_id),
            "created": format_time(self.created),
            "volsafe_version": self.volsafe_version,
            "volume": {
                "name": self.volume,
                "labels": dict(self.volume_labels),
                "driver": self.volume_driver,
                "driver_opts": dict(self.volume_driver_opts),
            },
            "source": {"hostname": self.source_hostname, "docker_id": self.source_docker_id},
            "archive": {
                "key": self.backup_id.archive_key,
                "format": "tar",
                "compression": self.compression,
                "compression_level": self.compression_level,
                **({"tar_size": self.tar_size} if clear else {}),
                "stored_size": self.stored_size,
                "sha256": self.sha256,
                **({"entries": self.entries} if clear else {}),
                **({"content_digest": self.content_digest} if self.content_digest and clear else {}),
                **({"encryption": self._encryption_record()} if self.encrypted else {}),
            },
            **({"mount": dict(self.mount)} if self.mount is not None else {}),
            **({"exclude": list(self.excluded_paths)} if self.excluded_paths else {}),
            **self.extra,
        }

    def _encryption_record(self) -> dict[str, Any]:
        """Return the manifest's ``archive.encryption`` object: the age format and who can open it.

        A passphrase archive still lists its (no) recipients, so that older volsafe versions read
        the manifest and refuse to decrypt it rather than refusing to list it.
        """
        record: dict[str, Any] = {"format": AGE_FORMAT, "recipients": list(self.encryption_recipients or ())}
        if self.encryption_passphrase:
            record["passphrase"] = True
        if self.sealed:
            record["metadata"] = self.sealed_metadata
        return record

    def to_json(self) -> bytes:
        """Return the manifest serialised as UTF-8 JSON."""
        # The layout (indentation, key order) is for people reading the file; every JSON reader gets
        # the same manifest whatever it is (pragma: no mutate).
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)  # pragma: no mutate
        return (text + "\n").encode()


def format_time(when: datetime) -> str:
    """Return ``when`` as ISO 8601 UTC with a ``Z`` suffix, to the millisecond.

    Milliseconds keep two backups taken in the same second in order, so ``@latest`` is right.
    """
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Return the aware UTC datetime of an ISO 8601 ``…Z`` time; raise ValueError if it is not one."""
    if not text.endswith("Z"):
        raise ValueError(text)
    for pattern in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError(text)


def _get(data: Any, path: str, kind: type | tuple[type, ...]) -> Any:
    """Return ``data[a][b]…`` for path ``a.b…`` if it exists with type ``kind``; raise ManifestError."""
    value = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ManifestError(f"manifest lacks field {path!r}")
        value = value[part]
    # bool is an int subclass in Python; a size of ``true`` is still wrong.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise ManifestError(f"manifest field {path!r} has the wrong type")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _str_map(data: Any, path: str) -> dict[str, str]:
    value = _get(data, path, dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestError(f"manifest field {path!r} must map strings to strings")
    return dict(value)


def _count(data: Any, path: str) -> int:
    value = _get(data, path, int)
    if value < 0:
        raise ManifestError(f"manifest field {path!r} is negative")
    return value


def _encryption(data: Any) -> tuple[tuple[str, ...] | None, bool]:
    """Return the recipients' fingerprints of an encrypted archive (None if it is not encrypted) and
    whether it is encrypted with a passphrase. Raises ManifestError for a malformed record."""
    if "encryption" not in data["archive"]:
        return None, False
    if _get(data, "archive.encryption.format", str) != AGE_FORMAT:
        raise ManifestError("manifest field 'archive.encryption.format' names an unknown encryption format")
    record = data["archive"]["encryption"]
    passphrase = _get(data, "archive.encryption.passphrase", bool) if "passphrase" in record else False
    recipients = _get(data, "archive.encryption.recipients", list) if "recipients" in record or not passphrase else []
    if not all(isinstance(r, str) for r in recipients):
        raise ManifestError("manifest field 'archive.encryption.recipients' must be a list of strings")
    if passphrase and recipients:
        raise ManifestError("manifest field 'archive.encryption' names both a passphrase and recipients")
    return tuple(recipients), passphrase


MOUNT_TYPES = ("volume", "bind", "tmpfs")


def _mount(data: Any) -> dict[str, str] | None:
    """Return the ``mount`` record of a container mount's backup, or None for a plain volume backup."""
    if "mount" not in data:
        return None
    mount = _str_map(data, "mount")
    for key in ("type", "source", "destination"):
        if key not in mount:
            raise ManifestError(f"manifest lacks field 'mount.{key}'")
    if mount["type"] not in MOUNT_TYPES:
        raise ManifestError(f"manifest field 'mount.type' is not one of {', '.join(MOUNT_TYPES)}")
    return mount


def _excluded(data: Any) -> tuple[str, ...]:
    if "exclude" not in data:
        return ()
    patterns = _get(data, "exclude", list)
    if not all(isinstance(p, str) for p in patterns):
        raise ManifestError("manifest field 'exclude' must be a list of strings")
    return tuple(patterns)


def parse_manifest(raw: bytes | str) -> Manifest:
    """Return the Manifest in ``raw``; raise ManifestError naming the first problem found.

    Bounded: a manifest larger than MAX_MANIFEST_SIZE, or nested deeper than ``bounds.MAX_DEPTH``,
    is refused before it is parsed.
    """
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestError(f"manifest is larger than {MAX_MANIFEST_SIZE} bytes")
    try:
        # As json.loads decodes bytes, so that the depth check sees the text it will parse.
        text = raw.decode(json.detect_encoding(raw), "surrogatepass") if isinstance(raw, (bytes, bytearray)) else raw
        if json_depth_exceeds(text):
            raise ManifestError(f"manifest nests arrays or objects more than {MAX_DEPTH} deep")
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:  # not reached after the depth check; kept as a second line of defence
        raise ManifestError(f"manifest nests arrays or objects more than {MAX_DEPTH} deep") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError("not a volsafe manifest")
    version = _get(data, "format_version", int)
    if version > SEALED_FORMAT_VERSION:
        raise ManifestError(f"manifest format {version} is newer than this volsafe understands; upgrade volsafe")
    try:
        backup_id = parse_backup_id(_get(data, "id", str))
    except Exception as exc:  # UsageError from the id parser
        raise ManifestError(f"manifest has a bad id: {exc}") from None
    if _get(data, "volume.name", str) != backup_id.volume:
        raise ManifestError("manifest volume name does not match its id")
    try:
        created = parse_time(_get(data, "created", str))
    except ValueError:
        raise ManifestError("manifest field 'created' is not an ISO 8601 UTC time") from None
    sha256 = _get(data, "archive.sha256", str)
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ManifestError("manifest field 'archive.sha256' is not a sha256 hex digest")
    compression = _get(data, "archive.compression", str)
    if compression != "zstd":
        raise ManifestError(f"unsupported compression {compression!r}")
    encryption_recipients, encryption_passphrase = _encryption(data)
    sealed = _sealed_metadata(data)
    if sealed:
        for name in ("tar_size", "entries", "content_digest"):
            if name in data["archive"]:
                raise ManifestError(f"manifest keeps 'archive.{name}' both sealed and in the clear")
        tar_size, entries, content_digest = None, None, ""
    else:
        tar_size, entries = _count(data, "archive.tar_size"), _count(data, "archive.entries")
        content_digest = _get(data, "archive.content_digest", str) if "content_digest" in data["archive"] else ""
        _check_digest(content_digest)
    known = {"format", "format_version", "id", "created", "volsafe_version", "volume", "source", "archive", "mount", "exclude"}
    return Manifest(
        backup_id=backup_id,
        created=created,
        volume_labels=_str_map(data, "volume.labels"),
        volume_driver=_get(data, "volume.driver", str),
        volume_driver_opts=_str_map(data, "volume.driver_opts"),
        source_hostname=_get(data, "source.hostname", str),
        source_docker_id=_get(data, "source.docker_id", str),
        volsafe_version=_get(data, "volsafe_version", str),
        tar_size=tar_size,
        stored_size=_count(data, "archive.stored_size"),
        sha256=sha256,
        entries=entries,
        compression=compression,  # pragma: no mutate  (only "zstd" gets here: the dataclass default)
        compression_level=_get(data, "archive.compression_level", int),
        content_digest=content_digest,
        encryption_recipients=encryption_recipients,
        encryption_passphrase=encryption_passphrase,
        mount=_mount(data),
        excluded_paths=_excluded(data),
        extra={k: v for k, v in data.items() if k not in known},
        sealed_metadata=sealed,
    )


def _check_digest(content_digest: str) -> None:
    if content_digest and not _CONTENT_DIGEST.match(content_digest):
        raise ManifestError("manifest field 'archive.content_digest' is not a tree-sha256 digest")


_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _sealed_metadata(data: Any) -> str:
    """Return the base64 text of ``archive.encryption.metadata`` ("" if there is none)."""
    record = data["archive"].get("encryption")
    if not isinstance(record, dict) or "metadata" not in record:
        return ""
    sealed = _get(data, "archive.encryption.metadata", str)
    if len(sealed) > MAX_SEALED_SIZE or not _BASE64.match(sealed):
        raise ManifestError("manifest field 'archive.encryption.metadata' is not base64 of a small sealed record")
    return sealed


def parse_sealed_fields(raw: bytes) -> tuple[int, int, str]:
    """Return (tar_size, entries, content_digest) from the opened sealed metadata of a manifest.

    Raises ManifestError if it is not the JSON object that ``Manifest.sealed_fields`` makes.
    """
    try:
        data = json.loads(raw) if len(raw) <= MAX_SEALED_SIZE and not json_depth_exceeds(raw.decode("utf-8")) else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise ManifestError("manifest's sealed metadata is not a JSON object")
    wrapped = {"archive": data}
    content_digest = _get(wrapped, "archive.content_digest", str)
    _check_digest(content_digest)
    return _count(wrapped, "archive.tar_size"), _count(wrapped, "archive.entries"), content_digest
