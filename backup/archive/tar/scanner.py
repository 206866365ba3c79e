"""volsafe's one tar reader, and the scanner built on it: counts entries, keeps directory and symlink
headers, computes a content digest, and (on restore) refuses entries that would escape the target
and re-emits the stream it checked, in one pass.

Pure: it sees bytes, never files. The engine feeds it every chunk of the tar stream on its way to or
from the helper container; it never holds more than one header in memory, whatever the entry sizes.

``TarReader`` decodes headers: ustar, POSIX pax (``x``/``g`` headers: ``path``, ``linkpath``,
``size``, ``uid``, ``gid``, ``mtime``) and GNU long names (``L``/``K``) and base-256 numbers, which
covers every tar that Docker's archive endpoint, GNU tar and busybox write. Where tar readers
disagree about what an archive holds, it refuses the archive instead of picking a meaning: several
pax or long-name headers for one entry, a pax ``size`` that contradicts the header's, a pax global
header that sets a name, size or owner, an entry type other than file, hard link, symlink, device,
directory or FIFO (GNU sparse, volume and multi-volume headers), a regular file named like a
directory, malformed pax records. ``TarScanner`` (content digest, checks) and ``tar_filter``
(``--exclude``) both read through it.

Re-emission (``TarScanner(canonical=True)``, what restore feeds to tar in the helper): every entry
is written anew from what the reader decided (name, type, mode, numeric owner, mtime, size, link
target, device numbers, data), as plain ustar headers with GNU long-name headers and base-256
numbers where needed, which busybox, GNU tar, Python's tarfile and Go read the same way. Whatever
else the stored archive carried (pax records, user names, prefix fields, padding bytes, anything
after the end marker) never reaches the extractor: the tar that is checked is the tar that is
extracted.
"""

from __future__ import annotations

import hashlib
import re
import struct
from zlib import adler32
from typing import BinaryIO

from backup.errors import IntegrityError

BLOCK = 512
_META_TYPES = frozenset(b"xgLK")  # headers that describe the next entry (``g``: all that follow) rather than being one
_ENTRY_TYPES = frozenset(b"01234567\x00")  # file, hard link, symlink, char and block device, directory, FIFO
_KEEP_TYPES = frozenset(b"52")  # directories and symlinks: their metadata needs a second pass
_ZERO_BLOCK = bytes(BLOCK)
_ZERO_VIEW = memoryview(_ZERO_BLOCK)
_DATA_TYPES = frozenset(b"07\x00")  # entries whose size counts data that follows the header
_DEVICE_TYPES = frozenset(b"34")
HARD_LINK, SYMLINK, DIRECTORY = ord("1"), ord("2"), ord("5")
MAX_META_SIZE = 1 << 20  # a pax or GNU long-name header's data; busybox ignores pax headers past this
_SIZE_LIMIT = 1 << 62  # file sizes, and mtimes either side of zero, that 64-bit readers all hold
_ID_LIMIT = (1 << 32) - 1  # uids and gids: 32 bits on Linux, and 2**32-1 means "leave unchanged"
_DEVICE_LIMIT = 1 << 21  # device numbers: what seven octal digits hold (Linux: 12-bit major, 20-bit minor)
_USTAR_SIZE_MAX = 8**11 - 1  # the largest size a ustar size field holds in octal
# pax keys the reader honours; a global header may not set them (readers disagree on whether it applies).
_HONOURED_PAX = (b"path", b"linkpath", b"size", b"uid", b"gid", b"mtime")
_PAX_UINT = re.compile(rb"[0-9]+")
_PAX_TIME = re.compile(rb"-?[0-9]+(\.[0-9]*)?")
# Digest version tag: bump it if what the digest covers ever changes, so old digests are not misread.
DIGEST_PREFIX = "tree-sha256:"


class HostileArchiveError(IntegrityError):
    """An archive entry would write outside the restore target: refused before anything is committed."""


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _parse_number(field: bytes) -> int:
    """Return the value of a numeric header field: octal digits (spaces before, then a NUL or space),
    or GNU base-256 (two's complement) when the top bit is set. Raises IntegrityError otherwise."""
    body = field[:-1]
    if field[-1] in (0, 32) and body.isdigit():  # the fast path: what every writer writes
        try:
            return int(body, 8)
        except ValueError:
            raise IntegrityError("archive is not a valid tar stream (bad number in a header)") from None
    if field[0] & 0x80:
        value = int.from_bytes(field, "big") & ((1 << (8 * len(field) - 1)) - 1)
        return value - (1 << (8 * len(field) - 1)) if field[0] & 0x40 else value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not text.isdigit():  # int() would also take "0o17", "1_0", "+1" and other whitespace
        raise IntegrityError("archive is not a valid tar stream (bad number in a header)")
    try:
        return int(text, 8)
    except ValueError:
        raise IntegrityError("archive is not a valid tar stream (bad number in a header)") from None


# One C call splits a header into its fields (ustar layout).
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
    """Return the key/value records of a pax header's data (exactly its size, no padding).

    Every record must be ``LENGTH KEY=VALUE\\n`` with LENGTH its exact length in decimal, and the
    records must fill the data. Raises IntegrityError if not: readers skip or cut malformed
    records differently, so a malformed one could mean different entries to them.
    """
    found: dict[bytes, bytes] = {}
    pos, end = 0, len(records)
    while pos < end:
        space = records.find(b" ", pos, min(end, pos + 21))
        digits = records[pos:space] if space > pos else b""
        length = int(digits) if digits.isdigit() else 0
        stop = pos + length
        if length <= len(digits) + 1 or stop > end or records[stop - 1] != 0x0A:
            raise IntegrityError("archive has a malformed pax header")
        key, equals, value = records[space + 1 : stop - 1].partition(b"=")
        if not equals or not key:
            raise IntegrityError("archive has a malformed pax header")
        found[key] = value
        pos = stop
    return found


def _pax_number(records: dict[bytes, bytes], key: bytes) -> int | None:
    """Return the integer (for mtime: the whole seconds) of pax record ``key``, or None if absent."""
    value = records.get(key)
    if value is None:
        return None
    pattern = _PAX_TIME if key == b"mtime" else _PAX_UINT
    if not pattern.fullmatch(value):
        raise IntegrityError(f"archive has a malformed pax {key.decode()} record")
    return int(value.split(b".", 1)[0])


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


class Entry:
    """One archive member as ``TarReader`` decided it (pax and GNU long-name headers applied)."""

    __slots__ = ("type", "name", "link", "size", "mode", "uid", "gid", "mtime", "devmajor", "devminor")

    def __init__(self, type, name, link, size, mode, uid, gid, mtime, devmajor, devminor):  # noqa: A002
        self.type = type  # typeflag byte: b"0", b"7" or 0 for a regular file
        self.name = name  # as stored, not normalised
        self.link = link  # hard link or symlink target, as stored
        self.size = size  # bytes of data after the header: 0 for all but regular files
        self.mode = mode  # permission bits (0o7777)
        self.uid = uid
        self.gid = gid
        self.mtime = mtime  # whole seconds
        self.devmajor = devmajor  # 0 but for devices
        self.devminor = devminor

    def __repr__(self) -> str:
        return f"Entry({chr(self.type or 48)!r}, {self.name!r}, size={self.size}, link={self.link!r})"


def _refuse(reason: str) -> IntegrityError:
    return IntegrityError(f"archive refused: {reason}")


class TarReader:
    """The tar header decoder: feed it a stream in order with ``feed``; subclasses act on the hooks.

    For each member, ``_on_entry(entry, header)`` gets the decided Entry and its raw ustar header
    (the raw pax and GNU long-name headers before it, each with its data, are in ``_pending``);
    then ``_on_data`` gets its data and ``_on_padding`` the padding after it, in pieces as they
    arrive. A pax global header goes to ``_on_global`` (raw, with its data), the end marker to
    ``_on_end``, and whatever follows the end marker to ``_after_end``. Raises IntegrityError for a
    malformed or ambiguous header (see the module docstring).
    """

    def __init__(self) -> None:
        self.entries = 0
        self.tar_size = 0
        self.ended = False
        self._header = bytearray()
        self._data = 0  # bytes of entry data still to pass
        self._skip = 0  # bytes of padding still to pass over
        # The next three are set by _start_meta before they are read (pragma: no mutate).
        self._meta_type = 0  # pragma: no mutate  (typeflag of the meta header whose data we are collecting)
        self._meta_header = b""  # pragma: no mutate
        self._meta_size = 0  # pragma: no mutate
        self._meta_need = 0  # bytes of that data (plus padding) still to collect
        self._meta_data = bytearray()
        self._pending: list[bytes] = []  # raw meta headers (with their data) waiting for their entry
        self._pax: dict[bytes, bytes] | None = None  # records of the pax header for the next entry
        self._long_name: bytes | None = None  # GNU ``L`` header for the next entry
        self._long_link: bytes | None = None  # GNU ``K`` header for the next entry
        self._zero_blocks = 0

    # -- hooks --------------------------------------------------------------------------------

    def _on_entry(self, entry: Entry, header: bytes) -> None:
        pass

    def _on_data(self, data: memoryview) -> None:
        pass

    def _on_padding(self, data: memoryview) -> None:
        pass

    def _on_global(self, raw: bytes) -> None:
        pass

    def _on_end(self) -> None:
        pass

    def _after_end(self, data: memoryview) -> None:
        pass

    # -- decoding -----------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume the next piece of the stream. Raises IntegrityError on a malformed header."""
        view = memoryview(data)
        self.tar_size += len(view)
        pos, end = 0, len(view)
        while pos < end:
            if self.ended:
                self._after_end(view[pos:])  # everything after the end marker is padding
                return
            if self._data:
                step = min(self._data, end - pos)
                self._on_data(view[pos : pos + step])
                self._data -= step
                pos += step
            elif self._skip:
                step = min(self._skip, end - pos)
                self._on_padding(view[pos : pos + step])
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
            if self._zero_blocks >= 2:
                if self._pending:
                    raise _refuse("a pax or GNU long-name header is followed by no entry")
                self.ended = True
                self._on_end()
            return
        if self._zero_blocks:
            raise IntegrityError("archive is not a valid tar stream (data after a zero block)")
        (name, mode, uid, gid, size, mtime, checksum, typeflag, link, magic, _version, _uname, _gname, devmajor, devminor, prefix) = _FIELDS.unpack(header)
        if not _checksum_ok(header, checksum):
            raise IntegrityError("archive is not a valid tar stream (header checksum mismatch)")
        typeflag = typeflag[0]
        size = _parse_number(size)
        if typeflag in _META_TYPES:
            self._start_meta(typeflag, header, size)
            return
        if typeflag not in _ENTRY_TYPES:
            raise _refuse(f"entry type {chr(typeflag)!r} (GNU sparse, volume or other special header) is not supported")
        name = _cstring(name)
        if prefix[0] != 0:
            if magic != b"ustar\x00":
                # GNU tar reads this area as times (GNU magic), busybox and tarfile as a name prefix.
                raise _refuse("a header without POSIX ustar magic has a name prefix")
            name = _cstring(prefix) + b"/" + name  # POSIX ustar: name = prefix/name
        link = _cstring(link)
        uid, gid, mtime = _parse_number(uid), _parse_number(gid), _parse_number(mtime)
        if self._pending:
            name, link, size, uid, gid, mtime = self._overridden(typeflag, name, link, size, uid, gid, mtime)
        if typeflag in _DATA_TYPES:
            if name[-1:] == b"/":
                # Old tars, tarfile (type "\0") and busybox with its OLDGNU option make a directory of
                # it, and then read its data as headers.
                raise _refuse(f"regular file {name.decode(errors='replace')[:200]!r} is named like a directory")
            if not 0 <= size < _SIZE_LIMIT:
                raise _refuse(f"entry size {size} is out of range")
        else:
            size = 0  # hard links, symlinks, directories, devices and FIFOs carry no data whatever size says
        if not name:
            raise _refuse("an entry has an empty name")
        if not (0 <= uid <= _ID_LIMIT - 1 and 0 <= gid <= _ID_LIMIT - 1):
            raise _refuse(f"owner {uid}:{gid} is out of range")
        if not -_SIZE_LIMIT < mtime < _SIZE_LIMIT:
            raise _refuse(f"mtime {mtime} is out of range")
        if typeflag in _DEVICE_TYPES:
            devmajor, devminor = _parse_number(devmajor), _parse_number(devminor)
            if not (0 <= devmajor < _DEVICE_LIMIT and 0 <= devminor < _DEVICE_LIMIT):
                raise _refuse(f"device {devmajor},{devminor} is out of range")
        else:
            devmajor = devminor = 0
        self.entries += 1
        self._on_entry(Entry(typeflag, name, link, size, _parse_number(mode) & 0o7777, uid, gid, mtime, devmajor, devminor), header)
        if self._pending:
            self._pending.clear()
        if size:
            self._data, self._skip = size, _padded(size) - size

    def _start_meta(self, typeflag: int, header: bytes, size: int) -> None:
        if not 0 <= size <= MAX_META_SIZE:
            raise _refuse(f"a pax or GNU long-name header of {size} bytes (more than {MAX_META_SIZE})")
        if typeflag == ord("g") and self._pending:
            raise _refuse("a pax global header stands between an entry's own headers")
        if (typeflag == ord("x") and self._pax is not None) or (typeflag == ord("L") and self._long_name is not None) or (
            typeflag == ord("K") and self._long_link is not None
        ):
            # Readers differ on which one wins (tarfile: the first, busybox: the last).
            raise _refuse(f"an entry has two {chr(typeflag)!r} headers")
        self._meta_type, self._meta_header, self._meta_size = typeflag, header, size
        self._meta_need = _padded(size)
        if not self._meta_need:
            self._finish_meta()

    def _finish_meta(self) -> None:
        data = bytes(self._meta_data)
        self._meta_data.clear()
        payload = data[: self._meta_size]
        if data.count(0, self._meta_size) != len(data) - self._meta_size:
            raise _refuse("a pax or GNU long-name header has data in its padding (tarfile reads pax records there)")
        raw = self._meta_header + data
        if self._meta_type == ord("g"):
            records = _pax_records(payload)
            for key in _HONOURED_PAX:
                if key in records:
                    raise _refuse(f"a pax global header sets {key.decode()!r} (tar readers disagree on what it applies to)")
            self._on_global(raw)  # global headers apply to all that follows
            return
        if self._meta_type == ord("x"):
            self._pax = _pax_records(payload)
            if any(key.startswith(b"GNU.sparse.") for key in self._pax):
                raise _refuse("GNU sparse files (pax GNU.sparse records) are not supported")
        elif self._meta_type == ord("L"):
            self._long_name = _cstring(payload)
        else:
            self._long_link = _cstring(payload)
        self._pending.append(raw)

    def _overridden(self, typeflag, name, link, size, uid, gid, mtime):
        """Return the entry's name, link target, size, uid, gid and mtime with the pax and GNU
        long-name headers before it applied, and forget those headers."""
        pax, self._pax = self._pax or {}, None
        long_name, self._long_name = self._long_name, None
        long_link, self._long_link = self._long_link, None
        if b"path" in pax:
            if long_name is not None:
                raise _refuse("an entry has both a pax path and a GNU long name")
            name = pax[b"path"]
            if not name:
                raise _refuse("an entry has an empty pax path")
        elif long_name is not None:
            name = long_name
        if b"linkpath" in pax:
            if long_link is not None:
                raise _refuse("an entry has both a pax linkpath and a GNU long link name")
            link = pax[b"linkpath"]
        elif long_link is not None:
            link = long_link
        override = _pax_number(pax, b"size")
        if override is not None and typeflag in _DATA_TYPES:
            # Writers put a size in pax only when the header cannot hold it, and leave 0 (or the
            # largest octal value) there; busybox reads the header's, tarfile and GNU tar the pax one.
            if size not in (0, override) and not (size == _USTAR_SIZE_MAX and override > size):
                raise _refuse(f"an entry's pax size ({override}) contradicts its header's size ({size})")
            size = override
        values = [_pax_number(pax, key) for key in (b"uid", b"gid", b"mtime")]
        uid, gid, mtime = (old if new is None else new for old, new in zip((uid, gid, mtime), values, strict=True))
        return name, link, size, uid, gid, mtime


# -- re-emission ------------------------------------------------------------------------------

_GNU_MAGIC = b"ustar  \x00"
_LONG_LINK = b"././@LongLink"  # GNU tar's name for its long-name headers


def _number(value: int, width: int) -> bytes:
    """Return ``value`` as a header field of ``width`` bytes: octal, or base-256 if it does not fit."""
    if 0 <= value < 8 ** (width - 1):  # pragma: no mutate  (at the edge either form reads back as the same number)
        return b"%0*o\x00" % (width - 1, value)
    return ((value % (1 << 8 * width)) | (1 << (8 * width - 1))).to_bytes(width, "big")


_OCTAL_FIELDS = b"%07o\x00%07o\x00%07o\x00%011o\x00%011o\x00        "  # mode, uid, gid, size, mtime, checksum as spaces
_SMALL, _LARGE = 8**7, 8**11
_OWNER_PAD = bytes(64)  # user and group names: left empty, so that extractors use the numeric ids
_TAIL = bytes(167)  # prefix (unused: long names get a GNU header) and the header's last 12 bytes


def _raw_header(name: bytes, typeflag: bytes, size: int, mode: int, uid: int, gid: int, mtime: int, link: bytes, devices=(0, 0)) -> bytes:
    # One format call for the usual case; the general path below writes the same bytes for these
    # values, so moving the edge cannot be observed (pragma: no mutate).
    if uid < _SMALL and gid < _SMALL and size < _LARGE and 0 <= mtime < _LARGE:  # pragma: no mutate
        numbers = _OCTAL_FIELDS % (mode, uid, gid, size, mtime)
    else:
        numbers = b"%07o\x00%s%s%s%s        " % (mode, _number(uid, 8), _number(gid, 8), _number(size, 12), _number(mtime, 12))
    header = b"%s%s%s%s%s%s%07o\x00%07o\x00%s" % (
        name.ljust(100, b"\x00"), numbers, typeflag, link.ljust(100, b"\x00"), _GNU_MAGIC, _OWNER_PAD, devices[0], devices[1], _TAIL,
    )
    return b"%s%06o\x00 %s" % (header[:148], _byte_sum(header), header[156:])


def _long_header(typeflag: bytes, value: bytes) -> bytes:
    data = value + b"\x00"
    return _raw_header(_LONG_LINK, typeflag, len(data), 0, 0, 0, 0, b"") + data + bytes(_padded(len(data)) - len(data))


def emit_header(entry: Entry, name: bytes, link: bytes) -> bytes:
    """Return the canonical header (GNU ``L``/``K`` headers first where a name is over 100 bytes)
    of ``entry`` under the normalised ``name`` and ``link``."""
    prefix = b""
    if len(name) > 100:
        prefix, name = _long_header(b"L", name), _LONG_LINK
    if len(link) > 100:
        prefix, link = prefix + _long_header(b"K", link), _LONG_LINK
    typeflag = b"0" if entry.type in _DATA_TYPES else bytes((entry.type,))
    return prefix + _raw_header(name, typeflag, entry.size, entry.mode, entry.uid, entry.gid, entry.mtime, link, (entry.devmajor, entry.devminor))


END_MARKER = bytes(2 * BLOCK)


class TarScanner(TarReader):
    """Feed it a tar stream in order with ``feed``; call ``finish`` at the end.

    After ``finish``, ``entries`` is the number of archive members (directories, files, links,
    devices; not pax or GNU meta headers), and ``content_digest`` a digest of every member's name,
    type, mode, owner ids, mtime (seconds), size, link target, device numbers and data, in stream
    order. It leaves out what a restore does not keep (user and group names, extended attributes,
    sub-second and access times), so the tree a restore produces, read back the same way, has the
    same digest as the one that was backed up.

    If ``metadata_sink`` is given, the headers of every directory and symlink, each with the meta
    headers that precede it, are written to it: together they form a tar of size-0 entries
    (without end marker) that carries those entries' owners, modes and mtimes, which busybox tar
    cannot restore on directories and symlinks by itself. (With ``canonical``, the re-emitted ones.)

    With ``refuse_hostile``, an entry that is absolute, has a ``..`` component or a NUL byte, is
    written through (or over) a symlink seen earlier, or is a hard link to such a place, raises
    HostileArchiveError before anything of it is passed on. The symlinks seen so far are kept in a
    set (their paths only) for that.

    With ``canonical`` (which implies ``refuse_hostile``), ``feed`` returns the re-emitted stream for
    what it was given (see the module docstring), and ``finish`` the end marker: the one stream to
    hand to an extractor.
    """

    def __init__(self, metadata_sink: BinaryIO | None = None, *, refuse_hostile: bool = False, canonical: bool = False):
        super().__init__()
        self._sink = metadata_sink
        self._refuse = refuse_hostile or canonical  # the checks also keep out what cannot be re-emitted as read
        self._out: list | None = [] if canonical else None
        self._symlinks: set[bytes] = set()
        self._digest = hashlib.sha256()

    @property
    def content_digest(self) -> str:
        """Return the content digest of the entries seen so far, as ``tree-sha256:HEX``."""
        return DIGEST_PREFIX + self._digest.hexdigest()

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | None:  # type: ignore[override]  # TarReader.feed returns nothing to use
        """Consume the next piece of the stream; with ``canonical``, return its re-emitted form.

        Raises IntegrityError on a malformed header, HostileArchiveError on a refused entry.
        """
        super().feed(data)
        out = self._out
        if out is None:
            return None
        # All of it was file data: the caller's bytes are passed on as they are, without a copy. The
        # join below returns the same bytes, so this test is not mutated (pragma: no mutate).
        if len(out) == 1 and type(data) is bytes and type(out[0]) is memoryview and out[0].obj is data and len(out[0]) == len(data):  # pragma: no mutate
            out.clear()
            return data
        emitted = b"".join(out)
        out.clear()
        return emitted

    def _on_entry(self, entry: Entry, header: bytes) -> None:
        name = normalize_name(entry.name)
        typeflag = entry.type
        if typeflag == HARD_LINK:
            link = normalize_name(entry.link)
        elif typeflag == SYMLINK:
            link = entry.link
        else:
            link = b""
        if self._refuse:
            self._check(entry, name, link)
        self._add_to_digest(entry, name, link)
        if self._out is not None:
            emitted = emit_header(entry, name, link)
            self._out.append(emitted)
            if self._sink is not None and typeflag in _KEEP_TYPES:
                self._sink.write(emitted)
        elif self._sink is not None and typeflag in _KEEP_TYPES:
            self._sink.write(b"".join(self._pending))
            self._sink.write(header)

    def _on_data(self, data: memoryview) -> None:
        self._digest.update(data)
        if self._out is not None:
            self._out.append(data)

    def _on_padding(self, data: memoryview) -> None:
        if self._out is not None:
            self._out.append(_ZERO_VIEW[: len(data)])  # zeros, whatever the stored padding held

    def _on_global(self, raw: bytes) -> None:
        if self._sink is not None and self._out is None:
            self._sink.write(raw)

    def _add_to_digest(self, entry: Entry, name: bytes, link: bytes) -> None:
        kind = b"0" if entry.type in _DATA_TYPES else bytes((entry.type,))
        mode = b"%o" % entry.mode
        uid, gid, mtime, size = b"%d" % entry.uid, b"%d" % entry.gid, b"%d" % entry.mtime, b"%d" % entry.size
        devices = b"%d,%d" % (entry.devmajor, entry.devminor) if entry.type in _DEVICE_TYPES else b"0,0"
        # Each field as LENGTH:VALUE, the record as LENGTH\nRECORD: no choice of names can make two
        # different entry lists hash alike. (One format call: this runs for every entry.)
        record = b"%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s" % (
            len(kind), kind, len(name), name, len(mode), mode, len(uid), uid, len(gid), gid,
            len(mtime), mtime, len(size), size, len(link), link, len(devices), devices,
        )
        self._digest.update(b"%d\n%s" % (len(record), record))

    def _check(self, entry: Entry, path: bytes, link: bytes) -> None:
        """Raise HostileArchiveError if this entry would write outside the target (or cannot be
        written as the reader decided it)."""
        check_entry_name(entry.name)
        typeflag = entry.type
        if path == b"." and typeflag != DIRECTORY:
            raise HostileArchiveError("archive refused: the root entry '.' is not a directory")
        if self._symlinks:
            self._refuse_through_symlink(path, "entry")
        if typeflag == HARD_LINK:
            check_entry_name(entry.link, "hard link target")
            if link == b".":
                raise HostileArchiveError("archive refused: a hard link has no target")
            if self._symlinks:
                self._refuse_through_symlink(link, "hard link target")
        elif typeflag == SYMLINK:
            if not link or b"\x00" in link:
                raise HostileArchiveError(f"archive refused: symlink {path.decode(errors='replace')[:200]!r} has an empty target or a NUL byte in it")
            self._symlinks.add(path)

    def _refuse_through_symlink(self, path: bytes, what: str) -> None:
        parts = path.split(b"/")
        for depth in range(1, len(parts) + 1):
            if b"/".join(parts[:depth]) in self._symlinks:
                shown = path.decode(errors="replace")[:200]
                raise HostileArchiveError(f"archive refused: {what} {shown!r} goes through a symlink stored earlier in it")

    def finish(self) -> bytes:
        """Check that the stream ended cleanly; return the rest of the re-emitted stream (the end
        marker; b"" without ``canonical``). Raises IntegrityError if it was cut short."""
        if self._data or self._skip or self._meta_need or self._header or not self.ended:
            raise IntegrityError("archive is truncated: the tar stream ends before its end marker")
        return END_MARKER if self._out is not None else b""
