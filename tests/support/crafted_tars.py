"""Test helper: hand-assembled tar streams whose headers tar readers may read differently.

Python's tarfile cannot write inconsistent headers (a pax size that contradicts the ustar one, a
prefix under GNU magic, ...), so these are built block by block. ``CASES`` names each crafted
archive with what volsafe must do with it: read it as every reader does ("agree"), or refuse it
("refuse") because readers disagree about what it holds.
"""

from __future__ import annotations

BLOCK = 512
END = bytes(2 * BLOCK)
MTIME = 1_700_000_000


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def header(
    name: bytes,
    typeflag: bytes = b"0",
    size: int = 0,
    *,
    mode: int = 0o644,
    uid: int = 1000,
    gid: int = 1000,
    mtime: int = MTIME,
    link: bytes = b"",
    devices: tuple[int, int] = (0, 0),
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
    uname: bytes = b"",
    mtime_field: bytes | None = None,
) -> bytes:
    """Return one 512-byte header with a correct checksum; numbers in octal unless given raw."""
    fields = [
        name.ljust(100, b"\0")[:100],
        b"%07o\0" % mode,
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        mtime_field if mtime_field is not None else b"%011o\0" % mtime,
        b" " * 8,
        typeflag,
        link.ljust(100, b"\0")[:100],
        magic,
        uname.ljust(32, b"\0"),
        bytes(32),
        b"%07o\0" % devices[0],
        b"%07o\0" % devices[1],
        prefix.ljust(155, b"\0"),
        bytes(12),
    ]
    raw = b"".join(fields)
    assert len(raw) == BLOCK
    return raw[:148] + b"%06o\0 " % sum(raw) + raw[156:]


def entry(name: bytes, data: bytes = b"", **kw) -> bytes:
    """A regular file (or, with ``typeflag``, any entry) with its data."""
    return header(name, size=len(data), **kw) + pad(data)


def record(key: bytes, value: bytes) -> bytes:
    """One pax record, ``LENGTH KEY=VALUE\\n``, with its own length counted."""
    body = b" %s=%s\n" % (key, value)
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d%s" % (length, body)


def pax(records: list[tuple[bytes, bytes]], typeflag: bytes = b"x", padding: bytes = b"") -> bytes:
    """A pax extended (``x``) or global (``g``) header; ``padding`` replaces the start of its zero padding."""
    data = b"".join(record(k, v) for k, v in records)
    block = pad(data)
    block = block[: len(data)] + padding + block[len(data) + len(padding) :]
    return header(b"PaxHeaders/entry", typeflag, len(data), mode=0o644, uid=0, gid=0) + block


def gnu_long(typeflag: bytes, value: bytes) -> bytes:
    """A GNU long name (``L``) or long link target (``K``) header with its data."""
    return header(b"././@LongLink", typeflag, len(value) + 1, uid=0, gid=0) + pad(value + b"\0")


# What a hiding place may hold: a setuid-root program and a world-writable /dev/mem (1,1).
HIDDEN = entry(b"hidden-suid", b"#!/bin/sh\nid\n", mode=0o4755, uid=0, gid=0) + header(
    b"hidden-mem", b"3", mode=0o666, uid=0, gid=0, devices=(1, 1)
)
AFTER = entry(b"after", b"after\n")
LONG_DIR = b"long-" + b"d" * 120
LONG_TARGET = b"../" + b"t" * 140


def _cases() -> dict[str, tuple[bytes, str]]:
    gap = len(HIDDEN)
    return {
        # A pax size larger than a ustar size of 0 (the form writers use for files over 8 GiB): busybox
        # reads 0 bytes and extracts what lies in the "data"; every other reader reads a file.
        "pax-size-larger-ustar-zero": (pax([(b"size", b"%d" % gap)]) + header(b"a", size=0) + HIDDEN + AFTER + END, "agree"),
        "pax-size-larger-ustar-nonzero": (
            pax([(b"size", b"%d" % (BLOCK + gap))]) + header(b"a", size=BLOCK) + b"A" * BLOCK + HIDDEN + AFTER + END, "refuse"
        ),
        # A smaller pax size: volsafe's old scanner checked the hidden entries, busybox wrote them as data.
        "pax-size-smaller": (pax([(b"size", b"0")]) + header(b"a", size=gap) + HIDDEN + AFTER + END, "refuse"),
        "pax-size-smaller-nonzero": (
            pax([(b"size", b"%d" % BLOCK)]) + header(b"a", size=BLOCK + gap) + b"A" * BLOCK + HIDDEN + AFTER + END, "refuse"
        ),
        # Zeros in the gap: busybox takes them for the end marker (a truncated file, "after" missing).
        "zeros-in-the-gap": (pax([(b"size", b"2048")]) + header(b"a", size=0) + bytes(2048) + AFTER + END, "agree"),
        "pax-path-vs-ustar-name": (pax([(b"path", b"real-name")]) + entry(b"decoy-name", b"x\n") + END, "agree"),
        "pax-linkpath-vs-ustar-linkname": (
            pax([(b"linkpath", b"real-target")]) + header(b"sym", b"2", link=b"decoy-target") + END, "agree"
        ),
        "pax-long-path-and-linkpath": (
            pax([(b"path", LONG_DIR)]) + header(b"long-d", b"5", mode=0o755)
            + pax([(b"path", LONG_DIR + b"/file")]) + entry(b"long-d/file", b"long\n")
            + pax([(b"linkpath", LONG_TARGET)]) + header(b"longsym", b"2", link=LONG_TARGET[:100])
            + END,
            "agree",
        ),
        "gnu-long-name-and-link": (
            gnu_long(b"L", LONG_DIR) + header(LONG_DIR[:100], b"5", mode=0o755)
            + gnu_long(b"L", LONG_DIR + b"/file") + entry(b"truncated", b"long\n")
            + gnu_long(b"K", LONG_TARGET) + header(b"longsym", b"2", link=LONG_TARGET[:100])
            + END,
            "agree",
        ),
        # Readers differ on which name wins (tarfile: the first header, busybox: the last).
        "gnu-long-name-and-pax-path": (gnu_long(b"L", b"from-L") + pax([(b"path", b"from-pax")]) + entry(b"ustar", b"x") + END, "refuse"),
        "two-pax-headers": (pax([(b"path", b"first")]) + pax([(b"path", b"second")]) + entry(b"ustar", b"x") + END, "refuse"),
        "two-gnu-long-names": (gnu_long(b"L", b"first") + gnu_long(b"L", b"second") + entry(b"ustar", b"x") + END, "refuse"),
        "pax-global-header": (
            pax([(b"comment", b"made by git archive"), (b"SCHILY.xattr.user.x", b"y")], typeflag=b"g")
            + entry(b"a", b"a\n") + pax([(b"mtime", b"1.5")]) + entry(b"b", b"b\n") + END,
            "agree",
        ),
        # tarfile applies a global path to later entries that have their own pax header; busybox never.
        "pax-global-path": (pax([(b"path", b"global-name")], typeflag=b"g") + pax([(b"mtime", b"1")]) + entry(b"a", b"x") + END, "refuse"),
        # busybox and tarfile join the prefix field whatever the magic; GNU tar reads times there under GNU magic.
        "prefix-under-gnu-magic": (entry(b"name", b"x\n", magic=b"ustar  \0", prefix=b"elsewhere") + END, "refuse"),
        "prefix-under-posix-magic": (header(b"d", b"5", mode=0o755) + entry(b"name", b"x\n", prefix=b"d") + END, "agree"),
        # A regular file named like a directory: old tars, tarfile (for type "\0") and busybox built with
        # its OLDGNU option make a directory of it, and read its data as headers.
        "file-named-like-a-directory": (entry(b"x/", HIDDEN) + AFTER + END, "refuse"),
        "gnu-sparse-entry": (header(b"sparse", b"S", size=len(HIDDEN)) + HIDDEN + AFTER + END, "refuse"),
        # busybox takes a header with an empty name for an empty block and skips it.
        "empty-name": (header(b"", b"0") + AFTER + END, "refuse"),
        # A record in the padding after the pax data: volsafe's old scanner and tarfile read it, busybox
        # and GNU tar do not.
        "pax-record-in-padding": (
            pax([(b"comment", b"x")], padding=record(b"path", b"from-padding")) + entry(b"ustar-name", b"x") + END, "refuse"
        ),
        "pax-record-overrunning-its-header": (
            header(b"PaxHeaders/e", b"x", 12) + pad(b"30 path=over\n") + entry(b"ustar-name", b"x") + END, "refuse"
        ),
        "pax-number-with-underscore": (pax([(b"size", b"1_0")]) + header(b"a", size=0) + pad(b"0123456789") + END, "refuse"),
        # A hard link's size is ignored by every reader: what follows is headers for all of them.
        "hard-link-with-a-size": (entry(b"f", b"data\n") + header(b"h", b"1", size=len(HIDDEN), link=b"f") + HIDDEN + END, "agree"),
        # GNU base-256, negative: -1 (busybox, GNU tar, tarfile), not -(2**94 - 1).
        "negative-base-256-mtime": (entry(b"old", b"x\n", mtime_field=b"\xff" * 12) + END, "agree"),
    }


CASES = _cases()


def store_crafted(backend, volume: str, tar_chunks, *, stamp_token: str, tar_size: int | None = None):
    """Store ``tar_chunks`` as a backup of ``volume`` without volsafe's backup path (which would refuse
    many of these); return its Manifest.

    The manifest is what an attacker who can write the store would write to pass every other check:
    the right stored size and sha256, and the entry count and content digest volsafe's reader finds
    (none when it refuses the tar). ``tar_size`` replaces the true tar size (a lie about it).
    """
    import hashlib
    from datetime import datetime, timezone

    import zstandard

    from backup.errors import IntegrityError
    from backup.archive.manifest import Manifest
    from backup.archive.naming import BackupId, new_stamp
    from backup.archive.tar.scanner import TarScanner

    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    scanner, readable = TarScanner(), True
    stored, size = [], 0
    for chunk in tar_chunks:
        size += len(chunk)
        if readable:
            try:
                scanner.feed(chunk)
            except IntegrityError:
                readable = False
        stored.append(compressor.compress(chunk))
    stored.append(compressor.flush())
    if readable:
        try:
            scanner.finish()
        except IntegrityError:
            readable = False
    archive = b"".join(stored)
    created = datetime.now(timezone.utc)
    backup_id = BackupId(volume, new_stamp(created, stamp_token))
    backend.save(backup_id.archive_key, [archive])
    manifest = Manifest(
        backup_id=backup_id, created=created, volume_labels={}, volume_driver="local", volume_driver_opts={},
        source_hostname="test", source_docker_id="TEST", volsafe_version="test",
        tar_size=size if tar_size is None else tar_size, stored_size=len(archive), sha256=hashlib.sha256(archive).hexdigest(),
        entries=scanner.entries if readable else 1, content_digest=scanner.content_digest if readable else "",
    )
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest
