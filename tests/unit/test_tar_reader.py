"""The one tar reader (backup.archive.tar.scanner.TarReader) under the scanner and the --exclude filter: they
decide alike, and a pax global header (``g``) passes the filter (its data block is not a header)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from backup.errors import IntegrityError
from backup.archive.tar.exclude import FilterStats, exclude_paths
from backup.archive.tar.scanner import TarScanner, _parse_number
from tests.support.crafted_tars import CASES, END, entry, header, pax
from tests.support.tar_views import tarfile_view, volsafe_view

# A pax global header as `git archive` or `tar --format=posix --pax-option=comment=...` write it
# (records past byte 124 of its data block: read as a header, that block has no valid size field).
GLOBAL = pax([(b"comment", b"3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"), (b"comment", b"nightly export of the app data " * 5)], typeflag=b"g")
_TREE = (
    GLOBAL
    + header(b"./", b"5", mode=0o755)
    + header(b"./cache/", b"5", mode=0o755)
    + entry(b"./cache/big.bin", b"x" * 3000)
    + entry(b"./keep.txt", b"keep\n")
    + pax([(b"path", b"./" + b"n" * 150 + b".log")])
    + entry(b"./nnn.log", b"log\n")
    + END
)
WITH_GLOBAL = _TREE + bytes(-len(_TREE) % 10240)  # with GNU tar's record padding


def _filtered(data: bytes, patterns: tuple[str, ...], chunk: int = 333) -> tuple[bytes, FilterStats]:
    stats = FilterStats()
    out = b"".join(exclude_paths(iter([data[i : i + chunk] for i in range(0, len(data), chunk)]), patterns, stats))
    return out, stats


@pytest.mark.parametrize("chunk", [1, 100, 333, 512, 1 << 20])
def test_filter_passes_a_pax_global_header(chunk):
    out, stats = _filtered(WITH_GLOBAL, ("/cache", "**/*.log"), chunk)
    assert stats.excluded == 3 and stats.sample == ["cache", "cache/big.bin", "n" * 150 + ".log"]
    assert out.startswith(GLOBAL)  # kept as it was: it applies to what follows
    scanner = TarScanner()
    scanner.feed(out)
    scanner.finish()
    assert scanner.entries == 2 and scanner.tar_size == len(out)
    assert sorted(tarfile_view(out)) == ["keep.txt"]


def test_filter_with_nothing_excluded_is_the_identity():
    out, stats = _filtered(WITH_GLOBAL, ("nothing-matches",))
    assert out == WITH_GLOBAL and stats.excluded == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_filter_and_scanner_decide_alike(case):
    data, _ = CASES[case]
    checked = volsafe_view(data)
    if checked is None:  # the scanner refuses it: so does the filter
        with pytest.raises(IntegrityError):
            _filtered(data, ("nothing-matches",))
        return
    assert _filtered(data, ("nothing-matches",))[0] == data
    for path in checked:  # each entry, by the name the scanner read, is what the filter drops
        out, stats = _filtered(data, (path,))
        assert stats.excluded >= 1 and path in stats.sample
        assert path not in volsafe_view(out)


def test_filter_refuses_what_the_scanner_refuses_even_in_excluded_entries():
    # An excluded entry is still read (its size decides where the next header is).
    data, _ = CASES["pax-size-larger-ustar-nonzero"]
    with pytest.raises(IntegrityError, match="pax size"):
        _filtered(data, ("a",))


@pytest.mark.parametrize(
    "field, value",
    [(b"0000644\x00", 0o644), (b"   644 \x00", 0o644), (b"\x00" * 8, 0), (b"\x80" + bytes(6) + b"\x01", 1), (b"\xff" * 8, -1),
     (b"\xff" * 7 + b"\xfe", -2), (b"\xbf" + b"\xff" * 7, (1 << 62) - 1)],
)
def test_numbers(field, value):
    assert _parse_number(field) == value


@pytest.mark.parametrize("field", [b"0o00644\x00", b"0_00644\x00", b"+000644\x00", b"0000648\x00", b"00\t0644\x00"])
def test_numbers_python_would_take_and_tar_would_not_are_refused(field):
    with pytest.raises(IntegrityError):
        _parse_number(field)


def test_meta_header_sizes_are_bounded():
    huge = header(b"PaxHeaders/x", b"x", 1 << 30)
    with pytest.raises(IntegrityError, match="more than"):
        TarScanner().feed(huge)


def test_long_names_re_emitted_as_gnu_headers_that_tarfile_reads():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in [
            ("d" * 120, tarfile.DIRTYPE, {}),
            ("d" * 120 + "/" + "f" * 200, tarfile.REGTYPE, {}),
            ("ünï/名前", tarfile.REGTYPE, {}),
            ("sym", tarfile.SYMTYPE, {"linkname": "/" + "t" * 300}),
            ("big-owner", tarfile.REGTYPE, {"uid": 3_000_000, "gid": 4_000_000_000, "mtime": -86400}),
        ]:
            info = tarfile.TarInfo(name)
            info.type = kind
            for key, value in extra.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    data = buf.getvalue()
    scanner = TarScanner(canonical=True)
    out = scanner.feed(data) + scanner.finish()
    assert tarfile_view(out) == tarfile_view(data) == volsafe_view(data)
    assert b"path=" not in out and b"uid=" not in out  # no pax record reaches the extractor


# -- end to end: a backup with --exclude of a tar that carries a pax global header -------------------


@pytest.mark.docker
def test_backup_with_exclude_of_a_tar_with_a_pax_global_header(docker_host, helper_image, volumes, volsafe, tmp_path, monkeypatch):
    """Neither GNU tar nor Docker write global headers for a volume, so the volume's tar is replaced
    by one that has one (as `git archive` or `tar --format=posix` with global options write them);
    the rest is the real backup (filter, compression, store), verify and restore."""
    import contextlib

    from backup.actions import backup as backup_action
    from tests.support.volume_tree import snapshot

    @contextlib.contextmanager
    def tar_with_global_header(*_args, **_kwargs):
        yield iter([WITH_GLOBAL[i : i + 1000] for i in range(0, len(WITH_GLOBAL), 1000)])

    monkeypatch.setattr(backup_action, "_tar_of", tar_with_global_header)
    source = volumes("gsrc")
    docker_host.api.create_volume(source)
    backed_up = volsafe("backup", source, "--to", str(tmp_path), "--exclude", "/cache", "--exclude", "**/*.log", "--json")
    assert backed_up.code == 0, backed_up.err
    record = json.loads(backed_up.out)[0]
    assert record["entries"] == 2
    assert volsafe("verify", record["id"], "--from", str(tmp_path)).code == 0
    target = volumes("gdst")
    restored = volsafe("restore", record["id"], "--from", str(tmp_path), "--to-volume", target)
    assert restored.code == 0, restored.err
    entries, _ = snapshot(docker_host, helper_image, target)
    assert sorted(entries) == [".", "keep.txt"]


@pytest.mark.parametrize("cut", [515, 700, 1023])
def test_re_emission_writes_zero_padding_whatever_the_stored_padding_held(cut):
    data = header(b"f", size=3) + b"abc" + b"\xff" * 509 + END
    scanner = TarScanner(canonical=True)
    out = scanner.feed(data[:cut]) + scanner.feed(data[cut:]) + scanner.finish()
    assert out[512:1024] == b"abc" + bytes(509) and len(out) == 2048
