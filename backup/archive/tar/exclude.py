"""Leave paths out of a tar stream: re-emit it entry by entry, without the excluded entries.

Pure: bytes in, bytes out. Docker's archive endpoint cannot exclude anything, so volsafe filters the
stream it reads: it sees every header (with its pax or GNU long-name headers) and every data block,
and drops an excluded entry's headers and data together. A hard link whose target was left out is
left out too (it would have nothing to point at); ``LinkDropped`` counts those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from backup.errors import IntegrityError
from backup.selectors import path_excluded
from backup.archive.tar.scanner import BLOCK, _cstring, _padded, _parse_number, _pax_records, normalize_name

_META_TYPES = frozenset(b"xLK")  # headers that describe the next entry (``g`` applies to all: kept)
_DATA_TYPES = frozenset(b"07\x00")


@dataclass
class FilterStats:
    """What the filter left out: entry paths (first 20 kept for messages) and counts."""

    excluded: int = 0
    links_dropped: int = 0
    sample: list[str] = field(default_factory=list)


def exclude_paths(chunks: Iterable[bytes], patterns: tuple[str, ...], stats: FilterStats | None = None) -> Iterator[bytes]:
    """Yield the tar stream ``chunks`` without the entries that ``patterns`` exclude.

    See ``backup.selectors.path_excluded`` for the pattern rules. Raises IntegrityError if the
    stream is not a tar (a header that cannot be parsed).
    """
    stats = stats if stats is not None else FilterStats()
    buffer = bytearray()
    pending: list[bytes] = []  # meta headers (with their data) of the next entry
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    dropped: set[bytes] = set()  # normalised paths of excluded regular files, for hard links
    passing = 0  # bytes of entry data (with padding) to pass through
    skipping = 0  # bytes to drop
    ended = False
    for chunk in chunks:
        if ended:
            yield chunk
            continue
        buffer += chunk
        out = bytearray()
        pos = 0
        while True:
            if passing:
                step = min(passing, len(buffer) - pos)
                out += buffer[pos : pos + step]
                passing -= step
                pos += step
                if passing:
                    break
            elif skipping:
                step = min(skipping, len(buffer) - pos)
                skipping -= step
                pos += step
                if skipping:
                    break
            if len(buffer) - pos < BLOCK:
                break
            header = bytes(buffer[pos : pos + BLOCK])
            if header == bytes(BLOCK):
                # End of archive: everything from here on (end marker, padding) goes out as it is.
                out += buffer[pos:]
                pos = len(buffer)
                ended = True
                break
            typeflag = header[156]
            size = _parse_number(header[124:136])
            if typeflag in _META_TYPES:
                need = BLOCK + _padded(size)
                if len(buffer) - pos < need:
                    break  # wait for the whole meta header and its data (small)
                data = bytes(buffer[pos + BLOCK : pos + BLOCK + size])
                pending.append(bytes(buffer[pos : pos + need]))
                if typeflag == ord("x"):
                    pax.update(_pax_records(data))
                elif typeflag == ord("L"):
                    long_name = _cstring(data)
                else:
                    long_link = _cstring(data)
                pos += need
                continue
            name = _cstring(header[0:100])
            if header[257:263] == b"ustar\x00" and header[345] != 0:
                name = _cstring(header[345:500]) + b"/" + name
            name = normalize_name(pax.get(b"path", long_name if long_name is not None else name))
            link = normalize_name(pax.get(b"linkpath", long_link if long_link is not None else _cstring(header[157:257])))
            override = pax.get(b"size")
            if override is not None:
                try:
                    size = int(override)
                except ValueError:
                    raise IntegrityError("archive has a malformed pax size record") from None
            data_size = _padded(size) if typeflag in _DATA_TYPES else 0
            drop = path_excluded(name.decode(errors="surrogateescape"), patterns)
            if not drop and typeflag == ord("1") and link in dropped:
                drop = True
                stats.links_dropped += 1
            if drop:
                stats.excluded += 1
                if len(stats.sample) < 20:
                    stats.sample.append(name.decode(errors="replace"))
                if typeflag in _DATA_TYPES:
                    dropped.add(name)
                skipping = BLOCK + data_size
            else:
                for meta in pending:
                    out += meta
                passing = BLOCK + data_size
            pending.clear()
            pax, long_name, long_link = {}, None, None
        del buffer[:pos]
        if out:
            yield bytes(out)
    if buffer:
        yield bytes(buffer)  # a cut-short stream stays cut short: the scanner downstream says so
