"""The tar scanner's and the exclude filter's behaviour through their public functions (TarScanner,
tree_digest, normalize_name, exclude_paths).

Written against behaviour, not internals, so they stay valid while the scanner is refactored: the
same tree spelled by different tar writers (pax records, GNU base-256 numbers, space-terminated
fields) has one digest; malformed headers and pax records are refused by name.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from backup.archive.codec import tree_digest
from backup.archive.tar.exclude import FilterStats, exclude_paths
from backup.archive.tar.scanner import TarScanner, check_entry_name, normalize_name
from backup.errors import IntegrityError


def reference_normalize(name: bytes) -> bytes:
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    return b"/".join(parts) or b"."


@pytest.mark.parametrize(
    "name",
    [b"a", b"./a", b"a/b", b"./a/b/", b"a//b", b"a/./b", b"/a", b"//a", b".hidden", b"./.hidden", b"a/.b", b"a/b/.",
     b".", b"./", b"", b"/", b"..", b"../a", b"a/..", b"...", b"./.", b".a/b", b"a/.", b"a.b/c"],
)
def test_normalize_name_drops_dot_and_empty_components_only(name):
    assert normalize_name(name) == reference_normalize(name)


def entry(name, *, uid=1000, gid=1000, mtime=1_700_000_000, data=b"x", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.uid, info.gid, info.mtime, info.mode, info.linkname = kind, uid, gid, mtime, 0o640, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def build(entries, fmt) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


@pytest.mark.parametrize(
    "fields",
    [dict(uid=3_000_000), dict(gid=2**31), dict(mtime=2**40), dict(uid=0o7777777)],
    ids=["big uid", "big gid", "far mtime", "largest octal uid"],
)
def test_gnu_base256_numbers_and_pax_records_give_one_digest(fields):
    # GNU writes numbers that do not fit the octal field in base-256; pax writes them as records.
    entries = [entry("./d", kind=tarfile.DIRTYPE, data=b""), entry("./d/f", **fields)]
    gnu, pax = tree_digest([build(entries, tarfile.GNU_FORMAT)]), tree_digest([build(entries, tarfile.PAX_FORMAT)])
    assert gnu == pax
    assert gnu != tree_digest([build([entries[0], entry("./d/f")], tarfile.GNU_FORMAT)])


def _respell(tar: bytes, offset: int, field: slice, text: bytes) -> bytes:
    """Rewrite one numeric field of the header at ``offset`` (and its checksum)."""
    raw = bytearray(tar)
    header = raw[offset : offset + 512]
    width = field.stop - field.start
    header[field] = text.ljust(width, b"\x00")[:width]
    header[148:156] = b"        "
    header[148:156] = b"%06o\x00 " % sum(header)
    raw[offset : offset + 512] = header
    return bytes(raw)


MODE, UID, SIZE, MTIME = slice(100, 108), slice(108, 116), slice(124, 136), slice(136, 148)


@pytest.mark.parametrize(
    "field, spellings",
    [
        (UID, [b"0001750\x00", b"0001750 ", b"   1750 ", b"1750\x00\x00\x00\x00", b"0001750 \x00"[:8], b"1750 \x00\x00\x00"]),
        (MODE, [b"0000640\x00", b"000640 \x00", b"    640 ", b"640\x00    "]),
        (MTIME, [b"14524770400\x00", b"14524770400 ", b" 14524770400"]),
        (SIZE, [b"00000000001\x00", b"00000000001 ", b"1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"]),
    ],
)
def test_octal_fields_read_the_same_however_terminated(field, spellings):
    tar = build([entry("./f")], tarfile.USTAR_FORMAT)
    digests = {tree_digest([_respell(tar, 0, field, spelling)]) for spelling in spellings}
    assert len(digests) == 1 and digests == {tree_digest([tar])}


def test_an_empty_numeric_field_reads_as_zero_and_garbage_is_refused():
    tar = build([entry("./f", uid=0)], tarfile.USTAR_FORMAT)
    assert tree_digest([_respell(tar, 0, UID, b"\x00" * 8)]) == tree_digest([tar])
    assert tree_digest([_respell(tar, 0, UID, b"        ")]) == tree_digest([tar])
    with pytest.raises(IntegrityError, match=r"^archive is not a valid tar stream \(bad number in a header\)$"):
        tree_digest([_respell(tar, 0, UID, b"12x4\x00")])


def test_negative_base256_mtime_reads_as_tarfile_reads_it():
    # GNU base-256 with the sign bit: 0xff then the two's complement of -1000 over the field.
    entries = [entry("./f", mtime=-1000)]
    gnu = build(entries, tarfile.GNU_FORMAT)
    assert gnu[MTIME.start] == 0xFF and tarfile.open(fileobj=io.BytesIO(gnu)).getmembers()[0].mtime == -1000
    assert tree_digest([gnu]) == tree_digest([build(entries, tarfile.PAX_FORMAT)])


def pax_tar(records: bytes, name: bytes = b"PaxHeaders/f") -> bytes:
    """A tar with one pax header holding ``records`` verbatim, then a file."""
    base = build([entry("./f")], tarfile.USTAR_FORMAT)
    header = bytearray(base[:512])
    header[0:100] = name.ljust(100, b"\x00")
    header[156:157] = b"x"
    header[124:136] = b"%011o\x00" % len(records)
    header[148:156] = b"        "
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + records + bytes(-len(records) % 512) + base


def test_pax_records_several_and_values_with_equals_and_spaces():
    records = b"30 mtime=1800000000.123456789\n" + b"20 path=./a=b c d/e\n" + b"12 uid=4242\n"
    assert int(records.split(b" ")[0]) == len(records.split(b"\n")[0]) + 1
    scanner = TarScanner(refuse_hostile=True)
    scanner.feed(pax_tar(records))
    scanner.finish()
    expected = build([entry("./a=b c d/e", uid=4242, mtime=1_800_000_000)], tarfile.PAX_FORMAT)
    assert scanner.content_digest == tree_digest([expected])[0] and scanner.entries == 1


@pytest.mark.parametrize(
    "records, message",
    [
        (b"xx path=./a\n", "malformed pax header"),
        (b"0 path=./a\n", "malformed pax header"),
        (b"-5 path=./a\n", "malformed pax header"),
        (b"15 uid=12ab34\n", "malformed pax header"),
        (b"16 mtime=soon!\n", "malformed pax header"),
        (b"13 size=12ab\n", "malformed pax size record"),
    ],
)
def test_malformed_pax_records_are_refused_by_name(records, message):
    with pytest.raises(IntegrityError, match=message):
        tree_digest([pax_tar(records)])


@pytest.mark.parametrize("name", [b"a\x00b", b"/abs", b"a/../b", b".."])
def test_check_entry_name_refuses(name):
    from backup.archive.tar.scanner import HostileArchiveError

    with pytest.raises(HostileArchiveError, match="^archive refused: entry "):
        check_entry_name(name)


@pytest.mark.parametrize("name", [b"a..b", b"..a/b", b"a/...", b"."])
def test_check_entry_name_allows_dots_inside_names(name):
    check_entry_name(name)


def test_data_after_a_single_zero_block_is_refused_and_finish_wants_the_end_marker():
    tar = build([entry("./f")], tarfile.USTAR_FORMAT)
    body = tar[:1024]  # header + data block
    with pytest.raises(IntegrityError, match=r"data after a zero block"):
        tree_digest([body + bytes(512) + tar[:512] + bytes(1024)])
    with pytest.raises(IntegrityError, match="truncated"):
        tree_digest([body + bytes(512)])
    assert tree_digest([body + bytes(1024) + b"\x01" * 100])[1] == 1  # after the end marker: padding


# -- the exclude filter ----------------------------------------------------------------------------
#The exclude filter's behaviour through its public function ``exclude_paths``, for every way a tar
#spells a name: ustar prefix fields, pax records, GNU long names and long link targets.
#
#The filtered stream must be the tar of exactly the kept entries (same digest as a tar built from
#them alone), whatever the chunking; hard links to a dropped file go too; global pax headers,
#anything after the end marker and a cut-short tail pass through as they are.

LONG = "deep/" * 25  # 125 characters: too long for the 100-byte name field


def xentry(name, kind=tarfile.REGTYPE, data=b"", link="", pax=None):
    return (name, kind, data, link, pax or {})


def xbuild(entries, fmt) -> bytes:
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
    xentry(".", tarfile.DIRTYPE),
    xentry("./keep.txt", data=b"k" * 700),
    xentry("./z.txt", data=b"last"),
    xentry("./cache", tarfile.DIRTYPE),
    xentry("./cache/big.bin", data=b"x" * 5000),
    xentry("./" + LONG.rstrip("/"), tarfile.DIRTYPE),
    xentry("./" + LONG + "app.log", data=b"log\n" * 300),
    xentry("./" + LONG + "keep.dat", data=b"data"),
    xentry("./hard-to-drop", tarfile.LNKTYPE, link="./cache/big.bin"),
    xentry("./hard-to-keep", tarfile.LNKTYPE, link="./z.txt"),
    xentry("./sym-to-cache", tarfile.SYMTYPE, link="cache/big.bin"),
]
DROPPED = {"./cache", "./cache/big.bin", "./" + LONG + "app.log", "./hard-to-drop"}
KEPT = [e for e in TREE if e[0] not in DROPPED]


def xnames(tar_bytes: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [m.name for m in tar]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar-prefix", "gnu-L-K", "pax"])
@pytest.mark.parametrize("chunk", [1, 7, 512, 1000, 1 << 20])
def test_filtered_stream_is_the_tar_of_the_kept_entries(fmt, chunk):
    raw = xbuild(TREE, fmt)
    if fmt == tarfile.USTAR_FORMAT:
        assert b"././@LongLink" not in raw and b"PaxHeaders" not in raw  # long names use the prefix field
    stats = FilterStats()
    out = run_filter(raw, ["cache", "*.log"], chunk, stats)
    assert tree_digest([out]) == tree_digest([xbuild(KEPT, fmt)])
    assert xnames(out) == xnames(xbuild(KEPT, fmt))
    assert stats.excluded == 4 and stats.links_dropped == 1
    assert stats.sample == ["cache", "cache/big.bin", LONG + "app.log", "hard-to-drop"]


def test_gnu_long_link_targets_are_followed_for_hard_links():
    # The hard link's target is longer than the link field: only the GNU "K" header names it.
    target = "./" + LONG + "more/" + "f" * 40 + ".log"
    entries = [xentry(".", tarfile.DIRTYPE), xentry(target, data=b"1"), xentry("./h", tarfile.LNKTYPE, link=target), xentry("./k", data=b"2")]
    stats = FilterStats()
    out = run_filter(xbuild(entries, tarfile.GNU_FORMAT), ["*.log"], 100, stats)
    assert tree_digest([out]) == tree_digest([xbuild([entries[0], entries[3]], tarfile.GNU_FORMAT)])
    assert stats.links_dropped == 1 and stats.excluded == 2


def test_pax_path_and_linkpath_records_are_what_is_matched():
    entries = [
        xentry(".", tarfile.DIRTYPE),
        xentry("./plain-name", data=b"a", pax={"path": "./secret.key"}),
        xentry("./h", tarfile.LNKTYPE, link="./other", pax={"linkpath": "./secret.key"}),
        xentry("./secret.key.txt", data=b"b"),
    ]
    stats = FilterStats()
    out = run_filter(xbuild(entries, tarfile.PAX_FORMAT), ["*.key"], 512, stats)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert [m.name for m in tar] == [".", "./secret.key.txt"]
    assert stats.excluded == 2 and stats.links_dropped == 1


def test_pax_size_record_is_honoured_and_a_bad_one_refused():
    raw = bytearray(xbuild([xentry("./big.log", data=b"z" * 3000, pax={"size": "3000"}), xentry("./after", data=b"ok")], tarfile.PAX_FORMAT))
    header_at = 1024  # pax header block + one block of records
    raw[header_at + 124 : header_at + 136] = b"00000000000\x00"  # only the pax record says 3000
    raw[header_at + 148 : header_at + 156] = b"        "
    raw[header_at + 148 : header_at + 156] = b"%06o\x00 " % sum(raw[header_at : header_at + 512])
    out = run_filter(bytes(raw), ["*.log"], 700)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar] == [("./after", b"ok")]
    bad = xbuild([xentry("./f", data=b"x", pax={"size": "1"})], tarfile.PAX_FORMAT).replace(b"size=1", b"size=x")
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
    raw = xbuild(TREE, tarfile.GNU_FORMAT)
    for chunk in (1, 333, 4096):
        assert run_filter(raw, ["no-such-name"], chunk) == raw
    for end in (700, len(raw) // 2 + 17, len(raw.rstrip(b"\0")) - 10):
        with pytest.raises(IntegrityError, match="truncated"):  # the scanner downstream says so
            tree_digest([run_filter(raw[:end], ["no-such-name"], 1000)])


def test_the_sample_keeps_the_first_twenty_names_and_names_may_be_any_bytes():
    entries = [xentry(".", tarfile.DIRTYPE)] + [xentry(f"./f{i:02d}.log", data=b"x") for i in range(25)]
    stats = FilterStats()
    run_filter(xbuild(entries, tarfile.PAX_FORMAT), ["*.log"], 512, stats)
    assert stats.excluded == 25 and stats.sample == [f"f{i:02d}.log" for i in range(20)]
    # A name that is not UTF-8 is matched on its bytes, and shown with replacement characters.
    raw = xbuild([xentry("./ok", data=b"1"), xentry("./x.log", data=b"2")], tarfile.USTAR_FORMAT).replace(b"x.log", b"\xff.log")
    raw = bytearray(raw)
    raw[512 * 2 + 148 : 512 * 2 + 156] = b"        "
    raw[512 * 2 + 148 : 512 * 2 + 156] = b"%06o\x00 " % sum(raw[1024:1536])
    stats = FilterStats()
    out = run_filter(bytes(raw), ["?.log"], 512, stats)
    assert stats.sample == ["\ufffd.log"]
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert [m.name for m in tar] == ["./ok"]


# -- the digest's format and the refusals' words ------------------------------------------------------

from tests.support.archive_factory import SAMPLE, make_tar  # noqa: E402


def test_the_digest_format_is_stable():
    # Manifests store this digest and verify recomputes it: a change here breaks every stored backup
    # (unless DIGEST_PREFIX is bumped with it). These values were computed by the current format.
    assert tree_digest([make_tar(SAMPLE)]) == ("tree-sha256:b5d577a3257957ba294b2c1eb1a3e2c8eb4c60e858fe53f7883b339da5208d28", 5)
    devices = SAMPLE + [("./dev", tarfile.CHRTYPE, b""), ("./c", tarfile.CONTTYPE, b"")]
    assert tree_digest([make_tar(devices)]) == ("tree-sha256:58df0156e42a89c19d844a14e39b756548bb6141354500daf83e4bd29c191bb3", 7)


def _refused(entries) -> str:
    from backup.archive.tar.scanner import HostileArchiveError

    scanner = TarScanner(refuse_hostile=True)
    with pytest.raises(HostileArchiveError) as raised:
        scanner.feed(make_tar(entries))
    return str(raised.value)


def test_refusals_say_what_and_why():
    assert _refused([("./a/../b", tarfile.REGTYPE, b"")]) == "archive refused: entry './a/../b' has a '..' component"
    assert _refused([("./h", tarfile.LNKTYPE, "../x")]) == "archive refused: hard link target '../x' has a '..' component"
    assert _refused([("./h", tarfile.LNKTYPE, "/x")]) == "archive refused: hard link target '/x' is an absolute path"
    assert _refused([("./s", tarfile.SYMTYPE, "/"), ("./s/x", tarfile.REGTYPE, b"")]) == (
        "archive refused: entry 's/x' goes through a symlink stored earlier in it"
    )
    assert _refused([("./s", tarfile.SYMTYPE, "/etc"), ("./h", tarfile.LNKTYPE, "./s/passwd")]) == (
        "archive refused: hard link target 's/passwd' goes through a symlink stored earlier in it"
    )
    # A symlink deeper down: every leading part of a path is checked, joined with "/".
    assert "goes through a symlink" in _refused([("./a", tarfile.DIRTYPE, b""), ("./a/s", tarfile.SYMTYPE, "/"), ("./a/s/x", tarfile.REGTYPE, b"")])
    long = "d/" * 150 + ".."
    assert _refused([("./" + long, tarfile.REGTYPE, b"")]) == f"archive refused: entry {('./' + long)[:200]!r} has a '..' component"
    assert _refused([("./" + "s" * 50, tarfile.SYMTYPE, "/"), ("./" + "s" * 50 + "/" + "x" * 300, tarfile.REGTYPE, b"")]) == (
        f"archive refused: entry {('s' * 50 + '/' + 'x' * 300)[:200]!r} goes through a symlink stored earlier in it"
    )


def test_a_name_that_is_not_utf8_is_shown_with_replacement_characters():
    from backup.archive.tar.scanner import HostileArchiveError

    with pytest.raises(HostileArchiveError, match="'\ufffd/../x' has a '..' component"):
        check_entry_name(b"\xff/../x")


def test_truncation_is_named():
    with pytest.raises(IntegrityError, match=r"^archive is truncated: the tar stream ends before its end marker$"):
        tree_digest([make_tar(SAMPLE)[:1500]])


def test_a_pax_record_that_starts_with_a_space_is_malformed():
    with pytest.raises(IntegrityError, match=r"^archive has a malformed pax header$"):
        tree_digest([pax_tar(b" 11 uid=42\n")])


def test_global_pax_headers_reach_the_metadata_sink():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}) as tar:
        info = tarfile.TarInfo("./d")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    sink = io.BytesIO()
    scanner = TarScanner(sink)
    scanner.feed(buf.getvalue())
    scanner.finish()
    kept = tarfile.open(fileobj=io.BytesIO(sink.getvalue() + bytes(1024)))
    assert [m.name for m in kept] == ["./d"] and kept.pax_headers == {"comment": "global"}
