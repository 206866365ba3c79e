"""What each tar reader finds in an archive, as comparable views (for the differential tests).

``volsafe_view`` is volsafe's reader (None where it refuses), ``tarfile_view`` Python's tarfile, the
independent oracle; ``canonical`` is the stream restore re-emits for the extractor.
"""

from __future__ import annotations

import io
import tarfile

from backup.archive.tar.scanner import TarScanner, normalize_name
from backup.errors import IntegrityError

KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"2": "symlink", b"3": "char", b"4": "block", b"5": "dir", b"6": "fifo"}


def _record(kind: str, size: int, mode: int, uid: int, gid: int, mtime: int, link: str, devices: tuple[int, int]) -> tuple:
    # What every extractor keeps alike: busybox neither chowns symlinks nor sets their mtime, and sets
    # a directory's mtime before it fills it (restore re-applies both afterwards; not compared here).
    if kind == "symlink":
        return (kind, link)
    return (kind, size if kind == "file" else 0, mode & 0o7777, uid, gid, mtime if kind != "dir" else None,
            devices if kind in ("char", "block") else None)


def _view(members) -> dict[str, tuple]:
    """Return {normalised path: record} of (type, path, size, mode, uid, gid, mtime, link, devices)
    tuples, a hard link taking the record of its target (as an extracted tree shows it)."""
    view: dict[str, tuple] = {}
    for typeflag, name, size, mode, uid, gid, mtime, link, devices in members:
        path = normalize_name(name).decode(errors="surrogateescape")
        if path == ".":
            continue  # the extraction directory itself
        if typeflag == b"1":
            view[path] = view[normalize_name(link).decode(errors="surrogateescape")]
        else:
            view[path] = _record(KINDS[typeflag], size, mode, uid, gid, mtime, link.decode(errors="surrogateescape"), devices)
    return view


class _Recorder(TarScanner):
    def __init__(self):
        super().__init__(refuse_hostile=True)
        self.members = []

    def _on_entry(self, entry, header):
        super()._on_entry(entry, header)
        typeflag = bytes((entry.type,))
        self.members.append((typeflag, entry.name, entry.size, entry.mode, entry.uid, entry.gid, entry.mtime, entry.link, (entry.devmajor, entry.devminor)))


def volsafe_view(data: bytes, chunk: int = 1000) -> dict | None:
    """What volsafe's reader finds in ``data`` (fed in pieces), or None if it refuses it."""
    recorder = _Recorder()
    try:
        for i in range(0, len(data), chunk):
            recorder.feed(data[i : i + chunk])
        recorder.finish()
    except IntegrityError:
        return None
    return _view(recorder.members)


def tarfile_view(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [
            (m.type, m.name.encode(errors="surrogateescape"), m.size, m.mode, m.uid, m.gid, int(m.mtime),
             m.linkname.encode(errors="surrogateescape"), (m.devmajor, m.devminor))
            for m in tar
        ]
    return _view(members)


def canonical(data: bytes) -> bytes:
    scanner = TarScanner(refuse_hostile=True, canonical=True)
    return b"".join(scanner.feed(data[i : i + 700]) for i in range(0, len(data), 700)) + scanner.finish()
