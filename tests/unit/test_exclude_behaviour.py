"""The exclude filter's behaviour through its public function ``exclude_paths``, for every way a tar
spells a name: ustar prefix fields, pax records, GNU long names and long link targets.

The filtered stream must be the tar of exactly the kept entries (same digest as a tar built from
them alone), whatever the chunking; hard links to a dropped file go too; global pax headers,
anything after the end marker and a cut-short tail pass through as they are.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from backup.archive.codec import tree_digest
from backup.archive.tar.exclude import FilterStats, exclude_paths
from backup.errors import IntegrityError

LONG = "deep/" * 25  # 125 characters: too long for the 100-byte name field


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", pax=None):
    return (name, kind, data, link, pax or {})


def build(entries, fmt) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data, link, pax in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime, info.uid = kind, link, 1_700_000_000, 1000
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.pax_headers = dict(pax)
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def run_filter(raw: bytes, patterns, chunk: int, stats=None) -> bytes:
    return b"".join(exclude_paths(iter([raw[i : i + chunk] for i in range(0, len(raw), chunk)]), tuple(patterns), stats))


TREE = [
    entry(".", tarfile.DIRTYPE),
    entry("./keep.txt", data=b"k" * 700),
    entry("./z.txt", data=b"last"),
    entry("./cache", tarfile.DIRTYPE),
    entry("./cache/big.bin", data=b"x" * 5000),
    entry("./" + LONG.rstrip("/"), tarfile.DIRTYPE),
    entry("./" + LONG + "app.log", data=b"log\n" * 300),
    entry("./" + LONG + "keep.dat", data=b"data"),
    entry("./hard-to-drop", tarfile.LNKTYPE, link="./cache/big.bin"),
    entry("./hard-to-keep", tarfile.LNKTYPE, link="./z.txt"),
    entry("./sym-to-cache", tarfile.SYMTYPE, link="cache/big.bin"),
]
DROPPED = {"./cache", "./cache/big.bin", "./" + LONG + "app.log", "./hard-to-drop"}
KEPT = [e for e in TREE if e[0] not in DROPPED]


def names(tar_bytes: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [m.name for m in tar]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar-prefix", "gnu-L-K", "pax"])
@pytest.mark.parametrize("chunk", [1, 7, 512, 1000, 1 << 20])
def test_filtered_stream_is_the_tar_of_the_kept_entries(fmt, chunk):
    raw = build(TREE, fmt)
    if fmt == tarfile.USTAR_FORMAT:
        assert b"././@LongLink" not in raw and b"PaxHeaders" not in raw  # long names use the prefix field
    stats = FilterStats()
    out = run_filter(raw, ["cache", "*.log"], chunk, stats)
    assert tree_digest([out]) == tree_digest([build(KEPT, fmt)])
    assert names(out) == names(build(KEPT, fmt))
    assert stats.excluded == 4 and stats.links_dropped == 1
    assert stats.sample == ["cache", "cache/big.bin", LONG + "app.log", "hard-to-drop"]


def test_gnu_long_link_targets_are_followed_for_hard_links():
    # The hard link's target is longer than the link field: only the GNU "K" header names it.
    target = "./" + LONG + "more/" + "f" * 40 + ".log"
    entries = [entry(".", tarfile.DIRTYPE), entry(target, data=b"1"), entry("./h", tarfile.LNKTYPE, link=target), entry("./k", data=b"2")]
    stats = FilterStats()
    out = run_filter(build(entries, tarfile.GNU_FORMAT), ["*.log"], 100, stats)
    assert tree_digest([out]) == tree_digest([build([entries[0], entries[3]], tarfile.GNU_FORMAT)])
    assert stats.links_dropped == 1 and stats.excluded == 2


def test_pax_path_and_linkpath_records_are_what_is_matched():
    entries = [
        entry(".", tarfile.DIRTYPE),
        entry("./plain-name", data=b"a", pax={"path": "./secret.key"}),
        entry("./h", tarfile.LNKTYPE, link="./other", pax={"linkpath": "./secret.key"}),
        entry("./secret.key.txt", data=b"b"),
    ]
    stats = FilterStats()
    out = run_filter(build(entries, tarfile.PAX_FORMAT), ["*.key"], 512, stats)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert [m.name for m in tar] == [".", "./secret.key.txt"]
    assert stats.excluded == 2 and stats.links_dropped == 1


def test_pax_size_record_is_honoured_and_a_bad_one_refused():
    raw = bytearray(build([entry("./big.log", data=b"z" * 3000, pax={"size": "3000"}), entry("./after", data=b"ok")], tarfile.PAX_FORMAT))
    header_at = 1024  # pax header block + one block of records
    raw[header_at + 124 : header_at + 136] = b"00000000000\x00"  # only the pax record says 3000
    raw[header_at + 148 : header_at + 156] = b"        "
    raw[header_at + 148 : header_at + 156] = b"%06o\x00 " % sum(raw[header_at : header_at + 512])
    out = run_filter(bytes(raw), ["*.log"], 700)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar] == [("./after", b"ok")]
    bad = build([entry("./f", data=b"x", pax={"size": "1"})], tarfile.PAX_FORMAT).replace(b"size=1", b"size=x")
    with pytest.raises(IntegrityError, match=r"^archive has a malformed pax size record$"):
        run_filter(bad, ["nothing"], 512)


def test_global_headers_and_what_follows_the_end_marker_pass_through():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}) as tar:
        for name in ("./a.log", "./b"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    raw = buf.getvalue() + b"trailing garbage after the archive"
    out = run_filter(raw, ["*.log"], 300)
    assert out.endswith(b"trailing garbage after the archive")
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert [m.name for m in tar] == ["./b"] and tar.pax_headers.get("comment") == "global"


def test_nothing_excluded_is_byte_identical_and_a_cut_stream_is_still_cut():
    raw = build(TREE, tarfile.GNU_FORMAT)
    for chunk in (1, 333, 4096):
        assert run_filter(raw, ["no-such-name"], chunk) == raw
    for end in (700, len(raw) // 2 + 17, len(raw.rstrip(b"\0")) - 10):
        with pytest.raises(IntegrityError, match="truncated"):  # the scanner downstream says so
            tree_digest([run_filter(raw[:end], ["no-such-name"], 1000)])


def test_the_sample_keeps_the_first_twenty_names_and_names_may_be_any_bytes():
    entries = [entry(".", tarfile.DIRTYPE)] + [entry(f"./f{i:02d}.log", data=b"x") for i in range(25)]
    stats = FilterStats()
    run_filter(build(entries, tarfile.PAX_FORMAT), ["*.log"], 512, stats)
    assert stats.excluded == 25 and stats.sample == [f"f{i:02d}.log" for i in range(20)]
    # A name that is not UTF-8 is matched on its bytes, and shown with replacement characters.
    raw = build([entry("./ok", data=b"1"), entry("./x.log", data=b"2")], tarfile.USTAR_FORMAT).replace(b"x.log", b"\xff.log")
    raw = bytearray(raw)
    raw[512 * 2 + 148 : 512 * 2 + 156] = b"        "
    raw[512 * 2 + 148 : 512 * 2 + 156] = b"%06o\x00 " % sum(raw[1024:1536])
    stats = FilterStats()
    out = run_filter(bytes(raw), ["?.log"], 512, stats)
    assert stats.sample == ["\ufffd.log"]
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert [m.name for m in tar] == ["./ok"]
