import io
import tarfile

import pytest

from backup.errors import IntegrityError
from backup.archive.tar.scanner import TarScanner


def _tar(fmt) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data in [
            (".", tarfile.DIRTYPE, b""),
            ("./d" + "/deep" * 40, tarfile.DIRTYPE, b""),
            ("./file", tarfile.REGTYPE, b"x" * 1000),
            ("./" + "n" * 200, tarfile.REGTYPE, b"y" * 513),
            ("./link", tarfile.SYMTYPE, b""),
            ("./hard", tarfile.LNKTYPE, b""),
            ("./empty", tarfile.REGTYPE, b""),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime = kind, len(data), 1_000_000_000
            info.linkname = "file" if kind == tarfile.SYMTYPE else ("./file" if kind == tarfile.LNKTYPE else "")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("chunk", [1, 100, 512, 4096, 1 << 20])
def test_counts_entries_in_any_chunking(fmt, chunk):
    data = _tar(fmt)
    sink = io.BytesIO()
    scanner = TarScanner(sink)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    scanner.finish()
    assert scanner.entries == 7 and scanner.tar_size == len(data)
    kept = tarfile.open(fileobj=io.BytesIO(sink.getvalue() + bytes(1024)))
    assert [(m.name, m.type) for m in kept] == [(".", tarfile.DIRTYPE), ("./d" + "/deep" * 40, tarfile.DIRTYPE), ("./link", tarfile.SYMTYPE)]


def test_pax_size_override_is_honoured():
    # A pax "size" record overrides the header's size field, as for files over 8 GiB.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big")
        info.size = 3000
        info.pax_headers = {"size": "3000"}
        tar.addfile(info, io.BytesIO(b"z" * 3000))
        tar.addfile(tarfile.TarInfo("after"), None)
    raw = bytearray(buf.getvalue())
    # Corrupt the ustar size field of "big" to 0 (and fix its checksum): only the pax record is right.
    header_at = 1024  # pax header block + one block of records
    raw[header_at + 124 : header_at + 136] = b"00000000000\x00"
    raw[header_at + 148 : header_at + 156] = b"        "
    raw[header_at + 148 : header_at + 156] = b"%06o\x00 " % sum(raw[header_at : header_at + 512])
    scanner = TarScanner()
    scanner.feed(bytes(raw))
    scanner.finish()
    assert scanner.entries == 2


def test_truncated_stream_is_detected():
    data = _tar(tarfile.PAX_FORMAT)
    scanner = TarScanner()
    scanner.feed(data[:2000])
    with pytest.raises(IntegrityError, match="truncated"):
        scanner.finish()


def test_corrupt_header_is_detected():
    data = bytearray(_tar(tarfile.PAX_FORMAT))
    data[600] ^= 0xFF
    with pytest.raises(IntegrityError, match="checksum"):
        TarScanner().feed(bytes(data))
