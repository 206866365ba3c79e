"""Leave paths out of a tar stream: re-emit it entry by entry, without the excluded entries.

Pure: bytes in, bytes out. Docker's archive endpoint cannot exclude anything, so volsafe filters the
stream it reads with the one tar reader (``backup.archive.tar.scanner.TarReader``), which decides what each
entry is (its pax or GNU long-name headers applied); an excluded entry's headers and data are
dropped together, everything else passes through byte for byte (pax global headers included). A
hard link whose target was left out is left out too (it would have nothing to point at);
``FilterStats.links_dropped`` counts those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from backup.selectors import path_excluded
from backup.archive.tar.scanner import END_MARKER, HARD_LINK, Entry, TarReader, normalize_name

_REGULAR = frozenset(b"07\x00")


@dataclass
class FilterStats:
    """What the filter left out: entry paths (first 20 kept for messages) and counts."""

    excluded: int = 0
    links_dropped: int = 0
    sample: list[str] = field(default_factory=list)


class _Filter(TarReader):
    def __init__(self, patterns: tuple[str, ...], stats: FilterStats):
        super().__init__()
        self.patterns = patterns
        self.stats = stats
        self.out: list = []
        self.passing = True  # whether the current entry's data and padding go out
        self.dropped: set[bytes] = set()  # normalised paths of excluded regular files, for hard links

    def _on_entry(self, entry: Entry, header: bytes) -> None:
        name = normalize_name(entry.name)
        drop = path_excluded(name.decode(errors="surrogateescape"), self.patterns)
        if not drop and entry.type == HARD_LINK and normalize_name(entry.link) in self.dropped:
            drop = True
            self.stats.links_dropped += 1
        if drop:
            self.stats.excluded += 1
            if len(self.stats.sample) < 20:
                self.stats.sample.append(name.decode(errors="replace"))
            if entry.type in _REGULAR:
                self.dropped.add(name)
        else:
            self.out += self._pending
            self.out.append(header)
        self.passing = not drop

    def _on_data(self, data: memoryview) -> None:
        if self.passing:
            self.out.append(data)

    _on_padding = _on_data

    def _on_global(self, raw: bytes) -> None:
        self.out.append(raw)

    def _on_end(self) -> None:
        self.out.append(END_MARKER)

    def _after_end(self, data: memoryview) -> None:
        self.out.append(data)  # GNU tar's record padding: as it was


def exclude_paths(chunks: Iterable[bytes], patterns: tuple[str, ...], stats: FilterStats | None = None) -> Iterator[bytes]:
    """Yield the tar stream ``chunks`` without the entries that ``patterns`` exclude.

    See ``backup.selectors.path_excluded`` for the pattern rules. Raises IntegrityError if the
    stream is not a tar the reader accepts. A cut-short stream comes out cut short (without the
    unfinished header): the scanner downstream says so.
    """
    selected = _Filter(patterns, stats if stats is not None else FilterStats())
    for chunk in chunks:
        selected.feed(chunk)
        if selected.out:
            yield b"".join(selected.out)
            selected.out.clear()
