"""Restore's scanner refuses escaping names however the tar spells them.

The header's own name field is innocent in every hostile case here: the escaping path sits in a
pax ``path``/``linkpath`` record, a GNU ``L``/``K`` long-name header or the ustar prefix field, which
is what tar uses instead. Headers are built by hand (not with ``tarfile``, which would normalise or
refuse some of them), each with a benign twin of the same shape that must pass, so a refusal cannot
come from a malformed header.
"""

from __future__ import annotations

import pytest

from backup.archive.tar.scanner import BLOCK, HostileArchiveError, TarScanner

GNU_MAGIC = b"ustar  \x00"
POSIX_MAGIC = b"ustar\x0000"


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def header(name: bytes, typeflag: bytes, *, size: int = 0, link: bytes = b"", magic: bytes = POSIX_MAGIC, prefix: bytes = b"") -> bytes:
    """Return one 512-byte tar header with a correct checksum."""
    fields = [
        name.ljust(100, b"\x00"),
        _octal(0o644, 8),
        _octal(1000, 8),
        _octal(1000, 8),
        _octal(size, 12),
        _octal(1_700_000_000, 12),
        b" " * 8,  # checksum, counted as spaces
        typeflag,
        link.ljust(100, b"\x00"),
        magic,
        b"root".ljust(32, b"\x00"),
        b"root".ljust(32, b"\x00"),
        _octal(0, 8),
        _octal(0, 8),
        prefix.ljust(155, b"\x00"),
        bytes(12),
    ]
    block = bytearray(b"".join(fields))
    assert len(block) == BLOCK
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax(records: dict[bytes, bytes]) -> bytes:
    """A pax extended header (type ``x``) carrying ``records`` for the next entry."""
    body = b""
    for key, value in records.items():
        record = b" %s=%s\n" % (key, value)
        # The length counts its own digits: find the fixed point.
        digits = 1
        while len(str(len(record) + digits)) != digits:
            digits += 1
        body += str(len(record) + digits).encode() + record
    return header(b"PaxHeaders/x", b"x", size=len(body)) + _padded(body)


def gnu_long(typeflag: bytes, value: bytes) -> bytes:
    """A GNU ``L`` (long name) or ``K`` (long link target) header for the next entry."""
    payload = value + b"\x00"
    return header(b"././@LongLink", typeflag, size=len(payload), magic=GNU_MAGIC) + _padded(payload)


def file_entry(name: bytes, data: bytes = b"x", magic: bytes = POSIX_MAGIC, prefix: bytes = b"") -> bytes:
    return header(name, b"0", size=len(data), magic=magic, prefix=prefix) + _padded(data)


END = bytes(2 * BLOCK)
FIRST = header(b"./", b"5") + file_entry(b"./target")  # a root and a real file for hard links


def tar(*parts: bytes) -> bytes:
    return FIRST + b"".join(parts) + END


LONG = b"sub/" * 30  # long enough (120 bytes) that only a long-name mechanism can carry the path

# name -> (hostile stream, its benign twin). The header's own name and link fields are innocent.
CASES = {
    "pax path with '..'": (
        tar(pax({b"path": b"./a/../../escaped"}), file_entry(b"./innocent")),
        tar(pax({b"path": b"./a/b/escaped"}), file_entry(b"./innocent")),
    ),
    "pax path absolute": (
        tar(pax({b"path": b"/etc/volsafe-pwned"}), file_entry(b"./innocent")),
        tar(pax({b"path": b"./etc/volsafe-pwned"}), file_entry(b"./innocent")),
    ),
    "pax linkpath with '..' (hard link)": (
        tar(pax({b"linkpath": b"./target/../../../etc/passwd"}), header(b"./h", b"1", link=b"./target")),
        tar(pax({b"linkpath": b"./target"}), header(b"./h", b"1", link=b"./target")),
    ),
    "pax linkpath absolute (hard link)": (
        tar(pax({b"linkpath": b"/etc/passwd"}), header(b"./h", b"1", link=b"./target")),
        tar(pax({b"linkpath": b"target"}), header(b"./h", b"1", link=b"./target")),
    ),
    "GNU L long name with '..'": (
        tar(gnu_long(b"L", b"./" + LONG + b"../" * 31 + b"escaped"), file_entry(b"./innocent", magic=GNU_MAGIC)),
        tar(gnu_long(b"L", b"./" + LONG + b"escaped"), file_entry(b"./innocent", magic=GNU_MAGIC)),
    ),
    "GNU L long name absolute": (
        tar(gnu_long(b"L", b"/" + LONG + b"escaped"), file_entry(b"./innocent", magic=GNU_MAGIC)),
        tar(gnu_long(b"L", b"./" + LONG + b"escaped"), file_entry(b"./innocent", magic=GNU_MAGIC)),
    ),
    "GNU K long link with '..' (hard link)": (
        tar(gnu_long(b"K", b"./" + LONG + b"../" * 31 + b"../etc/passwd"), header(b"./h", b"1", link=b"./target", magic=GNU_MAGIC)),
        tar(gnu_long(b"K", b"./" + LONG + b"target"), header(b"./h", b"1", link=b"./target", magic=GNU_MAGIC)),
    ),
    "GNU K long link absolute (hard link)": (
        tar(gnu_long(b"K", b"/" + LONG + b"passwd"), header(b"./h", b"1", link=b"./target", magic=GNU_MAGIC)),
        tar(gnu_long(b"K", b"./" + LONG.rstrip(b"/")), header(b"./h", b"1", link=b"./target", magic=GNU_MAGIC)),
    ),
    "GNU L and K together, only K hostile": (
        tar(gnu_long(b"L", b"./" + LONG + b"h"), gnu_long(b"K", b"../" * 40 + b"etc/passwd"), header(b"./h", b"1", link=b"./target", magic=GNU_MAGIC)),
        tar(gnu_long(b"L", b"./" + LONG + b"h"), gnu_long(b"K", b"./target"), header(b"./h", b"1", link=b"./target", magic=GNU_MAGIC)),
    ),
    "ustar prefix with '..'": (
        tar(file_entry(b"innocent", prefix=b"a/../..")),
        tar(file_entry(b"innocent", prefix=b"a/b")),
    ),
    "ustar prefix absolute": (
        tar(file_entry(b"innocent", prefix=b"/etc")),
        tar(file_entry(b"innocent", prefix=b"etc")),
    ),
}


def scan(data: bytes, chunk: int) -> TarScanner:
    scanner = TarScanner(refuse_hostile=True)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    scanner.finish()
    return scanner


CHUNKS = [1, 100, BLOCK, 4096]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_encoding_is_refused(case, chunk):
    hostile, _ = CASES[case]
    with pytest.raises(HostileArchiveError, match=r"archive refused: .*(absolute path|'\.\.' component)"):
        scan(hostile, chunk)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_benign_twin_passes(case, chunk):
    _, benign = CASES[case]
    assert scan(benign, chunk).entries == 3


@pytest.mark.parametrize("case", sorted(CASES))
def test_backup_scanner_does_not_refuse(case):
    # Refusal is restore's business: a backup's scanner (refuse_hostile=False) only counts and digests.
    hostile, _ = CASES[case]
    scanner = TarScanner()
    scanner.feed(hostile)
    scanner.finish()
    assert scanner.entries == 3


def test_overrides_apply_to_the_next_entry_only():
    # A long name given to a symlink must not stick to the entry after it: if it did, that entry
    # would be written over the symlink, which the scanner refuses.
    sym = header(b"./sym", b"2", link=b"/etc")
    for meta in (pax({b"path": b"./s"}), gnu_long(b"L", b"./s")):
        assert scan(tar(meta, sym, file_entry(b"./two")), BLOCK).entries == 4
        with pytest.raises(HostileArchiveError, match="symlink"):  # the same name again is refused
            scan(tar(meta, sym, file_entry(b"./s")), BLOCK)
    long_link = gnu_long(b"K", b"/" + LONG)
    assert scan(tar(long_link, header(b"./sym", b"2", link=b"x"), header(b"./h", b"1", link=b"./target")), BLOCK).entries == 4
