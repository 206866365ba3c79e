"""The content digest covers every attribute a restore keeps: change one, and the digest changes.

And ``verify`` fails on an archive whose manifest digest was computed on the unchanged tree, even
though the manifest's sha256, size and entry count all match the archive (the digest is the only
line of defence against such a swap).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, replace

import pytest

from backup.archive.codec import tree_digest
from storage_backends.local import LocalBackend
from tests.support.archive_factory import store_backup


@dataclass(frozen=True)
class E:
    """One tar entry, every field the digest is meant to cover."""

    name: str
    type: bytes
    data: bytes = b""
    mode: int = 0o644
    uid: int = 1000
    gid: int = 1000
    mtime: int = 1_700_000_000
    link: str = ""
    dev: tuple[int, int] = (0, 0)
    pax: tuple[tuple[str, str], ...] = ()


BASE = (
    E(".", tarfile.DIRTYPE, mode=0o755),
    E("./file", tarfile.REGTYPE, b"hello\n"),
    E("./a", tarfile.REGTYPE, b"ab"),
    E("./b", tarfile.REGTYPE, b"c"),
    E("./sym", tarfile.SYMTYPE, link="file"),
    E("./hard", tarfile.LNKTYPE, link="./file"),
    E("./chr", tarfile.CHRTYPE, mode=0o600, dev=(1, 3)),
    E("./blk", tarfile.BLKTYPE, mode=0o600, dev=(7, 200)),
    E("./fifo", tarfile.FIFOTYPE, mode=0o620),
)


def build(entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.uid, info.gid, info.mtime = e.type, e.mode, e.uid, e.gid, e.mtime
            info.uname = info.gname = "someone"
            info.linkname = e.link
            info.devmajor, info.devminor = e.dev
            if e.pax:
                info.pax_headers = dict(e.pax)
            info.size = len(e.data)
            tar.addfile(info, io.BytesIO(e.data) if e.data else None)
    return buf.getvalue()


def changed(target: str, **fields) -> tuple[E, ...]:
    """BASE with the entry ``target`` changed in ``fields`` (nothing else)."""
    assert any(e.name == target for e in BASE)
    return tuple(replace(e, **fields) if e.name == target else e for e in BASE)


# Each variant changes exactly one attribute of one entry; names, data and every other field stay.
VARIANTS = {
    "type: char device becomes a block device": changed("./chr", type=tarfile.BLKTYPE),
    "type: fifo becomes an empty regular file": changed("./fifo", type=tarfile.REGTYPE),
    "type: symlink becomes a hard link (same target text)": changed("./sym", type=tarfile.LNKTYPE),
    "mode of a file": changed("./file", mode=0o600),
    "mode: setuid bit": changed("./file", mode=0o4644),
    "mode of a directory": changed(".", mode=0o700),
    "uid": changed("./file", uid=1001),
    "gid": changed("./file", gid=1001),
    "uid through a pax record (header uid unchanged)": changed("./file", pax=(("uid", "3000000"),)),
    "gid through a pax record (header gid unchanged)": changed("./file", pax=(("gid", "3000000"),)),
    "mtime": changed("./file", mtime=1_700_000_001),
    "mtime of a symlink": changed("./sym", mtime=1),
    "mtime through a pax record": changed("./file", pax=(("mtime", "1800000000.5"),)),
    # The data stream "ab" + "c" stays the same bytes; only where one file ends moves.
    "size (same data bytes, split differently)": tuple(
        replace(e, data=b"abc") if e.name == "./a" else replace(e, data=b"") if e.name == "./b" else e for e in BASE
    ),
    "symlink target": changed("./sym", link="other"),
    "hard link target": changed("./hard", link="./a"),
    "device major": changed("./chr", dev=(2, 3)),
    "device minor": changed("./chr", dev=(1, 4)),
    "block device minor": changed("./blk", dev=(7, 201)),
    "file data (same size)": changed("./file", data=b"hellO\n"),
    "name": changed("./file", name="./filE"),
}


def digest(entries, fmt=tarfile.PAX_FORMAT) -> str:
    return tree_digest([build(entries, fmt)])[0]


def test_base_digest_is_stable_across_chunking_and_formats():
    data = build(BASE)
    whole, count = tree_digest([data])
    assert count == len(BASE)
    assert tree_digest([data[i : i + 97] for i in range(0, len(data), 97)]) == (whole, count)
    # GNU and pax spell the same tree differently; the digest sees the tree, not the spelling.
    assert digest(BASE, tarfile.GNU_FORMAT) == whole


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_attribute_changes_the_content_digest(variant):
    assert digest(VARIANTS[variant]) != digest(BASE), variant


def test_every_variant_is_distinct():
    digests = {name: digest(entries) for name, entries in VARIANTS.items()}
    assert len(set(digests.values())) == len(digests)


def test_what_a_restore_does_not_keep_is_left_out():
    # User and group names, and the equivalent spellings of a regular file's type ("0", "7", NUL).
    renamed = tuple(replace(e, pax=(("uname", "other"), ("gname", "other"))) for e in BASE)
    assert digest(renamed) == digest(BASE)
    for flag in (tarfile.AREGTYPE, tarfile.CONTTYPE):
        assert digest(changed("./file", type=flag)) == digest(BASE)
    # A pax mtime's fraction is below the digest's resolution.
    assert digest(changed("./file", pax=(("mtime", "1700000000.9"),))) == digest(BASE)


def _record(kind, name, mode, uid, gid, mtime, size, link=b"", devices=b"0,0") -> bytes:
    """The scanner's digest record of one entry (its documented LENGTH:VALUE framing)."""
    fields = (kind, name, b"%o" % mode, b"%d" % uid, b"%d" % gid, b"%d" % mtime, b"%d" % size, link, devices)
    record = b"".join(b"%d:%s" % (len(f), f) for f in fields)
    return b"%d\n%s" % (len(record), record)


@pytest.mark.parametrize("forged_size", [0, 1])
def test_file_data_cannot_pass_for_the_entries_after_it(forged_size):
    # The data of "./a" holds what the record of a following "./b" would look like: the recorded
    # sizes (and the entry count, which verify also checks) keep the two trees apart.
    two = (E("./a", tarfile.REGTYPE, b"ab"), E("./b", tarfile.REGTYPE, b"c"))
    forged = b"ab" + _record(b"0", b"b", 0o644, 1000, 1000, 1_700_000_000, forged_size) + b"c"
    one = (E("./a", tarfile.REGTYPE, forged),)
    assert digest(two) != digest(one)


@pytest.fixture
def stored(tmp_path):
    return tmp_path, LocalBackend(tmp_path)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_verify_fails_when_the_manifest_digest_is_of_the_unchanged_tree(run, stored, variant):
    root, backend = stored
    manifest = store_backup(backend, "db", build(VARIANTS[variant]), stamp_token="d1f0")
    assert manifest.entries == len(BASE)
    code, out, err = run("verify", str(manifest.backup_id), "--from", str(root))
    assert code == 0, out + err  # the archive as stored is intact
    path = root / manifest.backup_id.manifest_key
    data = json.loads(path.read_text())
    data["archive"]["content_digest"] = digest(BASE)  # sha256, size and entries still match the archive
    path.write_text(json.dumps(data))
    code, out, _ = run("verify", str(manifest.backup_id), "--from", str(root))
    assert code == 1 and "FAILED" in out and "content digest does not match" in out, out
