"""An incremental tar scanner: counts entries, keeps directory and symlink headers, computes a content
digest, and (on restore) refuses entries that would escape the target, in one pass.

Pure: it sees bytes, never files. The engine feeds it every chunk of the tar stream on its way to or
from the helper container; it never holds more than one header in memory, whatever the entry sizes.

It understands ustar, POSIX pax (``x``/``g`` headers, including the ``size`` override that pax uses
for files over 8 GiB) and GNU long names (``L``/``K``), which covers every tar that Docker's archive
endpoint and busybox write.
"""

from __future__ import annotations

import hashlib
import struct
from zlib import adler32
from typing import BinaryIO

from backup.errors import IntegrityError

BLOCK = 512
_META_TYPES = frozenset(b"xgLK")  # headers that describe the next entry rather than being one
_KEEP_TYPES = frozenset(b"52")  # directories and symlinks: their metadata needs a second pass
_ZERO_BLOCK = bytes(BLOCK)
_DATA_TYPES = frozenset(b"07\x00")  # entries whose size counts data that follows the header
# Digest version tag: bump it if what the digest covers ever changes, so old digests are not misread.
DIGEST_PREFIX = "tree-sha256:"


class HostileArchiveError(IntegrityError):
    """An archive entry would write outside the restore target: refused before anything is committed."""


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _parse_number(field: bytes) -> int:
    """Return the value of a numeric header field: octal text, or GNU base-256 when the top bit is set."""
    if field[-1] in (0, 32):
        # Fast path: digits (int() skips surrounding spaces) then a NUL or space terminator.
        try:
            return int(field[:-1], 8)
        except ValueError:
            pass
    if field[0] & 0x80:
        value = field[0] & 0x3F
        for byte in field[1:]:
            value = (value << 8) | byte
        return -value if field[0] & 0x40 else value
    text = field.split(b"\x00", 1)[0].strip(b" \x00")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise IntegrityError("archive is not a valid tar stream (bad number in a header)") from None


# One C call splits a header into the fields the scanner reads (ustar layout).
_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")


def _byte_sum(data: bytes) -> int:
    """Return the sum of the bytes of ``data`` (at most 512 of them).

    adler32's low half is 1 + the byte sum modulo 65521; halves of 256 bytes never reach the
    modulus, and this is about fifteen times faster than ``sum`` on every header of a stream.
    """
    half = len(data) // 2
    return (adler32(data[:half]) & 0xFFFF) + (adler32(data[half:]) & 0xFFFF) - 2


def _checksum_ok(header: bytes, field: bytes) -> bool:
    # The checksum is computed with its own field counted as eight spaces.
    return _parse_number(field) == _byte_sum(header) - sum(field) + 8 * 32


def _pax_records(records: bytes) -> dict[bytes, bytes]:
    """Return the key/value records of a pax extended header. Raises IntegrityError if malformed."""
    found: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(records):
        space = records.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(records[pos:space])
        except ValueError:
            raise IntegrityError("archive has a malformed pax header") from None
        if length <= 0:
            raise IntegrityError("archive has a malformed pax header")
        key, _, value = records[space + 1 : pos + length - 1].partition(b"=")
        found[key] = value
        pos += length
    return found


def _pax_int(records: dict[bytes, bytes], key: bytes) -> int | None:
    """Return the integer part of pax record ``key`` (mtime may have a fraction), or None if absent."""
    if key not in records:
        return None
    try:
        return int(records[key].split(b".", 1)[0])
    except ValueError:
        raise IntegrityError(f"archive has a malformed pax {key.decode()} record") from None


def _cstring(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def normalize_name(name: bytes) -> bytes:
    """Return an entry name without ``./`` and empty components (``.`` itself for the root)."""
    plain = name[2:] if name[:2] == b"./" else name
    # Fast path for the common case (a scanner sees every entry): nothing else to take out.
    if plain and b"//" not in plain and b"/." not in plain and plain[:1] not in (b"/", b".") and plain[-1:] != b"/":
        return plain
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    return b"/".join(parts) if parts else b"."


def check_entry_name(name: bytes, what: str = "entry") -> None:
    """Raise HostileArchiveError if ``name`` is absolute, has a ``..`` component or a NUL byte."""
    shown = name.decode(errors="replace")[:200]
    if b"\x00" in name:
        raise HostileArchiveError(f"archive refused: {what} {shown!r} contains a NUL byte")
    if name.startswith(b"/"):
        raise HostileArchiveError(f"archive refused: {what} {shown!r} is an absolute path")
    if b".." in name.split(b"/"):
        raise HostileArchiveError(f"archive refused: {what} {shown!r} has a '..' component")


class TarScanner:
    """Feed it a tar stream in order with ``feed``; call ``finish`` at the end.

    After ``finish``, ``entries`` is the number of archive members (directories, files, links,
    devices; not pax or GNU meta headers), and ``content_digest`` a digest of every member's name,
    type, mode, owner ids, mtime (seconds), size, link target, device numbers and data, in stream
    order. It leaves out what a restore does not keep (user and group names, extended attributes,
    sub-second and access times), so the tree a restore produces, read back the same way, has the
    same digest as the one that was backed up.

    If ``metadata_sink`` is given, the raw headers of every directory and symlink, each with the
    meta headers that precede it, are written to it: together they form a tar of size-0 entries
    (without end marker) that carries those entries' owners, modes and mtimes, which busybox tar
    cannot restore on directories and symlinks by itself.

    With ``refuse_hostile``, an entry that is absolute, has a ``..`` component or a NUL byte, is
    written through (or over) a symlink seen earlier, or is a hard link to such a place, raises
    HostileArchiveError before the chunk that holds its header is passed on. The symlinks seen so
    far are kept in a set (their paths only) for that.
    """

    def __init__(self, metadata_sink: BinaryIO | None = None, *, refuse_hostile: bool = False):
        self.entries = 0
        self.tar_size = 0
        self._sink = metadata_sink
        self._refuse = refuse_hostile
        self._symlinks: set[bytes] = set()
        self._digest = hashlib.sha256()
        self._header = bytearray()
        self._data = 0  # bytes of entry data still to hash
        self._skip = 0  # bytes of padding (or data-less payload) still to pass over
        self._meta_type = 0  # typeflag of the meta header whose data we are collecting
        self._meta_need = 0  # bytes of that data (plus padding) still to collect
        self._meta_data = bytearray()
        self._pending: list[bytes] = []  # raw meta headers waiting for their entry
        self._pax: dict[bytes, bytes] = {}  # records of the pax header for the next entry
        self._long_name: bytes | None = None  # GNU ``L`` header for the next entry
        self._long_link: bytes | None = None  # GNU ``K`` header for the next entry
        self._zero_blocks = 0
        self.ended = False

    @property
    def content_digest(self) -> str:
        """Return the content digest of the entries seen so far, as ``tree-sha256:HEX``."""
        return DIGEST_PREFIX + self._digest.hexdigest()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume the next piece of the stream.

        Raises IntegrityError on a malformed header, HostileArchiveError on a refused entry.
        """
        view = memoryview(data)
        self.tar_size += len(view)
        pos, end = 0, len(view)
        while pos < end:
            if self.ended:
                return  # everything after the end marker is padding
            if self._data:
                step = min(self._data, end - pos)
                self._digest.update(view[pos : pos + step])
                self._data -= step
                pos += step
            elif self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            elif self._meta_need:
                step = min(self._meta_need, end - pos)
                self._meta_data += view[pos : pos + step]
                self._meta_need -= step
                pos += step
                if not self._meta_need:
                    self._finish_meta()
            elif not self._header and end - pos >= BLOCK:
                # A whole header in this piece: no need to gather it.
                self._on_header(bytes(view[pos : pos + BLOCK]))
                pos += BLOCK
            else:
                step = min(BLOCK - len(self._header), end - pos)
                self._header += view[pos : pos + step]
                pos += step
                if len(self._header) == BLOCK:
                    header = bytes(self._header)
                    self._header.clear()
                    self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        if header == _ZERO_BLOCK:
            self._zero_blocks += 1
            self.ended = self._zero_blocks >= 2
            return
        if self._zero_blocks:
            raise IntegrityError("archive is not a valid tar stream (data after a zero block)")
        (name, mode, uid, gid, size, mtime, checksum, typeflag, link, magic, _version, _uname, _gname, devmajor, devminor, prefix) = _FIELDS.unpack(header)
        if not _checksum_ok(header, checksum):
            raise IntegrityError("archive is not a valid tar stream (header checksum mismatch)")
        typeflag = typeflag[0]
        size = _parse_number(size)
        if typeflag in _META_TYPES:
            self._meta_type = typeflag
            self._pending.append(header)
            self._meta_need = _padded(size)
            self._meta_size = size
            if not self._meta_need:
                self._finish_meta()
            return
        name = _cstring(name)
        if magic == b"ustar\x00" and prefix[0] != 0:  # POSIX ustar: name = prefix/name
            name = _cstring(prefix) + b"/" + name
        link = _cstring(link)
        if self._pax or self._long_name is not None or self._long_link is not None:
            name, link, size, ids = self._overridden(name, link, size)
        else:
            ids = (None, None, None)
        self.entries += 1
        if self._refuse:
            self._check(name, link, typeflag)
        devices = (devmajor, devminor) if typeflag in b"34" else None
        self._add_to_digest(typeflag, name, link, size, mode, uid, gid, mtime, devices, ids)
        if self._sink is not None and typeflag in _KEEP_TYPES:
            self._sink.write(b"".join(self._pending))
            self._sink.write(header)
        if self._pending:
            self._pending.clear()
        # Hard links, symlinks, directories, devices and FIFOs carry no data whatever size says.
        if typeflag in _DATA_TYPES:
            self._data, self._skip = size, _padded(size) - size

    def _overridden(self, name: bytes, link: bytes, size: int) -> tuple[bytes, bytes, int, tuple]:
        """Return the entry's name, link target, data size and (uid, gid, mtime) overrides from the
        pax and GNU headers before it (None where there is none), and forget those headers."""
        pax, self._pax = self._pax, {}
        long_name, self._long_name = self._long_name, None
        long_link, self._long_link = self._long_link, None
        name = pax.get(b"path", long_name if long_name is not None else name)
        link = pax.get(b"linkpath", long_link if long_link is not None else link)
        override = _pax_int(pax, b"size")
        ids = (_pax_int(pax, b"uid"), _pax_int(pax, b"gid"), _pax_int(pax, b"mtime"))
        return name, link, override if override is not None else size, ids

    def _add_to_digest(self, typeflag, name, link, size, mode, uid, gid, mtime, devices, ids) -> None:
        pax_uid, pax_gid, pax_mtime = ids
        kind = b"0" if typeflag in b"7\x00" else bytes((typeflag,))
        name = normalize_name(name)
        mode = b"%o" % (_parse_number(mode) & 0o7777)
        uid = b"%d" % (pax_uid if pax_uid is not None else _parse_number(uid))
        gid = b"%d" % (pax_gid if pax_gid is not None else _parse_number(gid))
        mtime = b"%d" % (pax_mtime if pax_mtime is not None else _parse_number(mtime))
        size = b"%d" % (size if typeflag in _DATA_TYPES else 0)
        link = normalize_name(link) if typeflag == 49 else (link if typeflag == 50 else b"")  # "1", "2"
        devices = b"%d,%d" % (_parse_number(devices[0]), _parse_number(devices[1])) if devices else b"0,0"
        # Each field as LENGTH:VALUE, the record as LENGTH\nRECORD: no choice of names can make two
        # different entry lists hash alike. (One format call: this runs for every entry.)
        record = b"%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s" % (
            len(kind), kind, len(name), name, len(mode), mode, len(uid), uid, len(gid), gid,
            len(mtime), mtime, len(size), size, len(link), link, len(devices), devices,
        )
        self._digest.update(b"%d\n%s" % (len(record), record))

    def _check(self, name: bytes, link: bytes, typeflag: int) -> None:
        """Raise HostileArchiveError if this entry would write outside the target."""
        check_entry_name(name)
        path = normalize_name(name)
        if self._symlinks:
            self._refuse_through_symlink(path, "entry")
        if typeflag == ord("1"):
            check_entry_name(link, "hard link target")
            if self._symlinks:
                self._refuse_through_symlink(normalize_name(link), "hard link target")
        if typeflag == ord("2"):
            self._symlinks.add(path)

    def _refuse_through_symlink(self, path: bytes, what: str) -> None:
        parts = path.split(b"/")
        for depth in range(1, len(parts) + 1):
            if b"/".join(parts[:depth]) in self._symlinks:
                shown = path.decode(errors="replace")[:200]
                raise HostileArchiveError(f"archive refused: {what} {shown!r} goes through a symlink stored earlier in it")

    def _finish_meta(self) -> None:
        data = bytes(self._meta_data)
        self._meta_data.clear()
        if self._meta_type == ord("x"):
            self._pax.update(_pax_records(data))
        elif self._meta_type == ord("L"):
            self._long_name = _cstring(data[: self._meta_size])
        elif self._meta_type == ord("K"):
            self._long_link = _cstring(data[: self._meta_size])
        if self._meta_type == ord("g") and self._sink is not None:
            self._sink.write(self._pending.pop() + data)  # global headers apply to all that follows
            return
        self._pending.append(data)

    def finish(self) -> None:
        """Check that the stream ended cleanly. Raises IntegrityError if it was cut short."""
        if self._data or self._skip or self._meta_need or self._header or not self.ended:
            raise IntegrityError("archive is truncated: the tar stream ends before its end marker")
