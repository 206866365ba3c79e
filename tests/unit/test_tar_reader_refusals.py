"""The tar reader's refusals, each with the exact message a user reads, and the edges either side of
each limit (killers of mutants that survived the other tests; docs/mutation.md).

The archives are assembled block by block (tests/support/crafted_tars.py): tarfile cannot write most
of them. A message names what is wrong and which entry, so it is compared in full.
"""

from __future__ import annotations

import io
import re
import tarfile

import pytest

from backup.archive.tar.exclude import FilterStats, exclude_paths
from backup.archive.tar.scanner import MAX_META_SIZE, Entry, HostileArchiveError, TarScanner, _parse_number, normalize_name
from backup.errors import IntegrityError
from tests.support.crafted_tars import END, entry, gnu_long, header, pad, pax

# Names past the 200 characters a message shows, with a byte that is not UTF-8 in them.
LONG = b"\xff" + b"d" * 250
LIMIT_62, ID_MAX, DEVICE_LIMIT = 1 << 62, (1 << 32) - 2, 1 << 21


def _with_field(raw: bytes, offset: int, value: bytes) -> bytes:
    """Return header ``raw`` (512 bytes) with ``value`` written at ``offset`` and its checksum redone."""
    block = bytearray(raw[:512])
    block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block) + raw[512:]


def _base256(value: int, width: int) -> bytes:
    return ((value % (1 << 8 * width)) | (1 << (8 * width - 1))).to_bytes(width, "big")


_UID, _GID, _SIZE, _MTIME, _DEVMAJOR, _DEVMINOR = 108, 116, 124, 136, 329, 337


def _scan(data: bytes, *, refuse: bool = False, sink=None) -> TarScanner:
    scanner = TarScanner(sink, refuse_hostile=refuse)
    scanner.feed(data)
    scanner.finish()
    return scanner


def _shown(name: bytes) -> str:
    return repr(name.decode(errors="replace")[:200])


REFUSED = {
    "two pax headers": (pax([(b"mtime", b"1")]) * 2 + entry(b"f", b"x"), "archive refused: an entry has two 'x' headers"),
    "two GNU long names": (gnu_long(b"L", b"a") * 2 + entry(b"f", b"x"), "archive refused: an entry has two 'L' headers"),
    "two GNU long links": (gnu_long(b"K", b"t") * 2 + header(b"s", b"2", link=b"t"), "archive refused: an entry has two 'K' headers"),
    "meta header past the limit": (
        header(b"PaxHeaders/e", b"x", MAX_META_SIZE + 1),
        f"archive refused: a pax or GNU long-name header of {MAX_META_SIZE + 1} bytes (more than {MAX_META_SIZE})",
    ),
    "meta header before the end marker": (pax([(b"mtime", b"1")]), "archive refused: a pax or GNU long-name header is followed by no entry"),
    "global header between an entry's headers": (
        pax([(b"mtime", b"1")]) + pax([(b"comment", b"c")], typeflag=b"g") + entry(b"f", b"x"),
        "archive refused: a pax global header stands between an entry's own headers",
    ),
    "data in a pax header's padding": (
        pax([(b"comment", b"x")], padding=b"junk") + entry(b"f", b"x"),
        "archive refused: a pax or GNU long-name header has data in its padding (tarfile reads pax records there)",
    ),
    "global header sets a path": (
        pax([(b"path", b"g")], typeflag=b"g") + entry(b"f", b"x"),
        "archive refused: a pax global header sets 'path' (tar readers disagree on what it applies to)",
    ),
    "GNU sparse pax records": (
        pax([(b"GNU.sparse.major", b"1")]) + entry(b"f", b"x"),
        "archive refused: GNU sparse files (pax GNU.sparse records) are not supported",
    ),
    "pax path and GNU long name": (
        gnu_long(b"L", b"a") + pax([(b"path", b"b")]) + entry(b"f", b"x"),
        "archive refused: an entry has both a pax path and a GNU long name",
    ),
    "empty pax path": (pax([(b"path", b"")]) + entry(b"f", b"x"), "archive refused: an entry has an empty pax path"),
    "pax linkpath and GNU long link": (
        gnu_long(b"K", b"a") + pax([(b"linkpath", b"b")]) + header(b"s", b"2", link=b"t"),
        "archive refused: an entry has both a pax linkpath and a GNU long link name",
    ),
    "pax record without '='": (header(b"PaxHeaders/e", b"x", 6) + pad(b"6 abc\n") + entry(b"f", b"x"), "archive has a malformed pax header"),
    "pax record with an empty key": (header(b"PaxHeaders/e", b"x", 7) + pad(b"7 =abc\n") + entry(b"f", b"x"), "archive has a malformed pax header"),
    # Only mtime may have a fraction (whole seconds are kept); a fractional owner or size is no number.
    "pax uid with a fraction": (pax([(b"uid", b"1.5")]) + entry(b"f", b"x"), "archive has a malformed pax uid record"),
    "pax size with a fraction": (pax([(b"size", b"1.5")]) + entry(b"f", b"x"), "archive has a malformed pax size record"),
    "data after one zero block": (entry(b"f", b"x") + bytes(512) + entry(b"g", b"y"), "archive is not a valid tar stream (data after a zero block)"),
    "header checksum mismatch": (
        header(b"f")[:148] + b"000000\x00 " + header(b"f")[156:],
        "archive is not a valid tar stream (header checksum mismatch)",
    ),
    "GNU sparse entry": (header(b"s", b"S"), "archive refused: entry type 'S' (GNU sparse, volume or other special header) is not supported"),
    "name prefix under GNU magic": (
        entry(b"name", b"x", magic=b"ustar  \x00", prefix=b"elsewhere"),
        "archive refused: a header without POSIX ustar magic has a name prefix",
    ),
    "regular file named like a directory": (
        gnu_long(b"L", LONG + b"/") + entry(b"f", b""),
        f"archive refused: regular file {_shown(LONG + b'/')} is named like a directory",
    ),
    "size of 2**62": (_with_field(header(b"f"), _SIZE, _base256(LIMIT_62, 12)), f"archive refused: entry size {LIMIT_62} is out of range"),
    "empty name": (header(b""), "archive refused: an entry has an empty name"),
    "uid of 2**32-1": (_with_field(header(b"f"), _UID, _base256(ID_MAX + 1, 8)), f"archive refused: owner {ID_MAX + 1}:1000 is out of range"),
    "gid of 2**32-1": (_with_field(header(b"f"), _GID, _base256(ID_MAX + 1, 8)), f"archive refused: owner 1000:{ID_MAX + 1} is out of range"),
    "mtime of 2**62": (_with_field(header(b"f"), _MTIME, _base256(LIMIT_62, 12)), f"archive refused: mtime {LIMIT_62} is out of range"),
    "mtime of -2**62": (_with_field(header(b"f"), _MTIME, _base256(-LIMIT_62, 12)), f"archive refused: mtime {-LIMIT_62} is out of range"),
    "device major of 2**21": (
        _with_field(header(b"c", b"3"), _DEVMAJOR, _base256(DEVICE_LIMIT, 8)),
        f"archive refused: device {DEVICE_LIMIT},0 is out of range",
    ),
    "device minor of 2**21": (
        _with_field(header(b"c", b"3"), _DEVMINOR, _base256(DEVICE_LIMIT, 8)),
        f"archive refused: device 0,{DEVICE_LIMIT} is out of range",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_reader_refuses_with_a_message_that_names_the_problem(case):
    data, message = REFUSED[case]
    with pytest.raises(IntegrityError, match=f"^{re.escape(message)}$"):
        _scan(data + END)


HOSTILE = {
    "symlink with an empty target": (
        gnu_long(b"L", LONG) + header(b"s", b"2", link=b""),
        f"archive refused: symlink {_shown(LONG)} has an empty target or a NUL byte in it",
    ),
    "symlink with a NUL in its target": (
        pax([(b"linkpath", b"a\x00b")]) + header(b"s", b"2", link=b"t"),
        "archive refused: symlink 's' has an empty target or a NUL byte in it",
    ),
    "hard link to the root": (header(b"h", b"1", link=b"./"), "archive refused: a hard link has no target"),
    "root that is not a directory": (header(b".", b"2", link=b"x"), "archive refused: the root entry '.' is not a directory"),
    "entry through a symlink, name not UTF-8": (
        header(b"s", b"2", link=b"/") + entry(b"s/\xff", b"x"),
        "archive refused: entry 's/\ufffd' goes through a symlink stored earlier in it",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_restore_refuses_with_a_message_that_names_the_entry(case):
    data, message = HOSTILE[case]
    with pytest.raises(HostileArchiveError, match=f"^{re.escape(message)}$"):
        _scan(data + END, refuse=True)


AT_LIMIT = pax([(b"comment", b"a" * (MAX_META_SIZE - len(b"1048576 comment=\n")))])


def test_the_last_value_inside_each_limit_is_read():
    data = (
        header(b"PaxHeaders/empty", b"x", 0)  # a pax header without records
        + entry(b"f", b"x")
        + AT_LIMIT
        + entry(b"g", b"y")
        + _with_field(_with_field(header(b"ids"), _UID, _base256(ID_MAX, 8)), _GID, _base256(ID_MAX, 8))
        + _with_field(header(b"late"), _MTIME, _base256(LIMIT_62 - 1, 12))
        + _with_field(header(b"early"), _MTIME, _base256(-LIMIT_62 + 1, 12))
        + _with_field(_with_field(header(b"c", b"3"), _DEVMAJOR, _base256(DEVICE_LIMIT - 1, 8)), _DEVMINOR, _base256(DEVICE_LIMIT - 1, 8))
        + END
    )
    assert len(AT_LIMIT) == 512 + MAX_META_SIZE  # a record of exactly the limit, no padding
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        seen = [(m.name, m.uid, m.gid, m.mtime, m.devmajor, m.devminor) for m in tar]
    assert seen == [
        ("f", 1000, 1000, 1_700_000_000, 0, 0),
        ("g", 1000, 1000, 1_700_000_000, 0, 0),
        ("ids", ID_MAX, ID_MAX, 1_700_000_000, 0, 0),
        ("late", 1000, 1000, LIMIT_62 - 1, 0, 0),
        ("early", 1000, 1000, -LIMIT_62 + 1, 0, 0),
        ("c", 1000, 1000, 1_700_000_000, DEVICE_LIMIT - 1, DEVICE_LIMIT - 1),
    ]
    assert _scan(data).entries == 6


def test_one_pax_one_long_name_and_one_long_link_for_one_entry_are_read():
    # Each kind at most once per entry, in any order; the metadata sink gets them all with the entry.
    data = pax([(b"mtime", b"5")]) + gnu_long(b"K", b"target") + gnu_long(b"L", b"name") + header(b"x", b"2", link=b"short") + END
    sink = io.BytesIO()
    assert _scan(data, sink=sink).entries == 1
    for raw in (data, sink.getvalue() + END):
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            assert [(m.name, m.linkname, m.mtime) for m in tar] == [("name", "target", 5)]


def test_a_header_whose_bytes_sum_high_is_read():
    # The checksum is summed in two halves (adler32); a header of 0xff bytes in its last two thirds
    # (link, user name, prefix) sums past one half's modulus if the split is wrong.
    data = header(b"f", link=b"\xff" * 100, uname=b"\xff" * 32, prefix=b"\xff" * 155) + END
    assert sum(data[170:512]) > 65520
    assert _scan(data).entries == 1


@pytest.mark.parametrize("name, expected", [(b"././x", b"x"), (b"./.", b"."), (b"./../x", b"../x"), (b".//x", b"x")])
def test_normalize_name_after_a_leading_dot_slash(name, expected):
    assert normalize_name(name) == expected


def test_every_hard_link_to_an_excluded_file_is_counted():
    data = entry(b"big", b"x") + header(b"h1", b"1", link=b"big") + header(b"h2", b"1", link=b"./big") + entry(b"keep", b"k") + END
    stats = FilterStats()
    out = b"".join(exclude_paths([data], ("big",), stats))
    assert stats.excluded == 3 and stats.links_dropped == 2 and stats.sample == ["big", "h1", "h2"]
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert tar.getnames() == ["keep"]


def test_an_entry_shows_its_type_name_size_and_link():
    # What a debugger or a log line shows of an entry; a type of NUL (old tars) is a regular file, "0".
    assert repr(Entry(0, b"f", b"", 3, 0o644, 0, 0, 0, 0, 0)) == "Entry('0', b'f', size=3, link=b'')"
    assert repr(Entry(ord("2"), b"s", b"t", 0, 0o777, 0, 0, 0, 0, 0)) == "Entry('2', b's', size=0, link=b't')"


@pytest.mark.parametrize(
    "field",
    [
        b"0000648\x00",  # digits, terminated: but 8 is no octal digit
        b"   0648\x00",  # the same after leading spaces
        b"0000644!",  # octal digits, then a byte that ends no field
        b"0000644X",
        b"0000644\t",  # whitespace other than a space or NUL (int() and tarfile take it, GNU tar does not)
    ],
)
def test_a_number_field_that_is_not_octal_is_refused_by_name(field):
    with pytest.raises(IntegrityError, match=r"^archive is not a valid tar stream \(bad number in a header\)$"):
        _parse_number(field)
