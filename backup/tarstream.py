"""An incremental tar scanner: counts entries and keeps directory and symlink headers, in one pass.

Pure: it sees bytes, never files. The engine feeds it every chunk of the tar stream on its way to or
from the helper container; it never holds more than one header in memory, whatever the entry sizes.

It understands ustar, POSIX pax (``x``/``g`` headers, including the ``size`` override that pax uses
for files over 8 GiB) and GNU long names (``L``/``K``), which covers every tar that Docker's archive
endpoint and busybox write.
"""

from __future__ import annotations

from typing import BinaryIO

from backup.errors import IntegrityError

BLOCK = 512
_META_TYPES = frozenset(b"xgLK")  # headers that describe the next entry rather than being one
_KEEP_TYPES = frozenset(b"52")  # directories and symlinks: their metadata needs a second pass
_ZERO_BLOCK = bytes(BLOCK)


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _parse_number(field: bytes) -> int:
    """Return the value of a numeric header field: octal text, or GNU base-256 when the top bit is set."""
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


def _checksum_ok(header: bytes) -> bool:
    expected = _parse_number(header[148:156])
    # The checksum is computed with its own field counted as eight spaces.
    actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return expected == actual


def _pax_size(records: bytes) -> int | None:
    """Return the ``size`` value of a pax extended header's records, or None if it sets none."""
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
        if key == b"size":
            try:
                return int(value)
            except ValueError:
                raise IntegrityError("archive has a malformed pax size record") from None
        pos += length
    return None


class TarScanner:
    """Feed it a tar stream in order with ``feed``; call ``finish`` at the end.

    After ``finish``, ``entries`` is the number of archive members (directories, files, links,
    devices; not pax or GNU meta headers). If ``metadata_sink`` is given, the raw headers of every
    directory and symlink, each with the meta headers that precede it, are written to it: together
    they form a tar of size-0 entries (without end marker) that carries those entries' owners, modes
    and mtimes, which busybox tar cannot restore on directories and symlinks by itself.
    """

    def __init__(self, metadata_sink: BinaryIO | None = None):
        self.entries = 0
        self.tar_size = 0
        self._sink = metadata_sink
        self._header = bytearray()
        self._skip = 0  # bytes of entry data (plus padding) still to pass over
        self._meta_type = 0  # typeflag of the meta header whose data we are collecting
        self._meta_need = 0  # bytes of that data (plus padding) still to collect
        self._meta_data = bytearray()
        self._pending: list[bytes] = []  # raw meta headers waiting for their entry
        self._size_override: int | None = None
        self._zero_blocks = 0
        self.ended = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume the next piece of the stream. Raises IntegrityError on a malformed header."""
        view = memoryview(data)
        self.tar_size += len(view)
        pos, end = 0, len(view)
        while pos < end:
            if self.ended:
                return  # everything after the end marker is padding
            if self._skip:
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
        if not _checksum_ok(header):
            raise IntegrityError("archive is not a valid tar stream (header checksum mismatch)")
        typeflag = header[156]
        size = _parse_number(header[124:136])
        if typeflag in _META_TYPES:
            self._meta_type = typeflag
            self._pending.append(header)
            self._meta_need = _padded(size)
            if not self._meta_need:
                self._finish_meta()
            return
        if self._size_override is not None:
            size = self._size_override
            self._size_override = None
        self.entries += 1
        if self._sink is not None and typeflag in _KEEP_TYPES:
            self._sink.write(b"".join(self._pending))
            self._sink.write(header)
        self._pending.clear()
        # Hard links, symlinks, directories, devices and FIFOs carry no data whatever size says.
        self._skip = _padded(size) if typeflag in b"07\x00" else 0

    def _finish_meta(self) -> None:
        data = bytes(self._meta_data)
        self._meta_data.clear()
        if self._meta_type == ord("x"):
            self._size_override = _pax_size(data)
        if self._meta_type == ord("g") and self._sink is not None:
            self._sink.write(self._pending.pop() + data)  # global headers apply to all that follows
            return
        self._pending.append(data)

    def finish(self) -> None:
        """Check that the stream ended cleanly. Raises IntegrityError if it was cut short."""
        if self._skip or self._meta_need or self._header or not self.ended:
            raise IntegrityError("archive is truncated: the tar stream ends before its end marker")
