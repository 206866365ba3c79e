"""Unit tests written to kill mutants of the pure core that the other tests let survive.

Each test pins down behaviour that a surviving mutant changed (docs/mutation.md lists them); error
messages are matched because they are what a user reads.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from backup.archive.manifest import AGE_FORMAT, Manifest, format_time, parse_manifest, parse_time
from backup.archive.naming import (
    STAMP,
    BackupId,
    backup_id_from_archive_key,
    backup_id_from_manifest_key,
    mount_storage_name,
    new_stamp,
    parse_backup_id,
    stamp_time,
)
from backup.errors import ManifestError, UsageError
from backup.jobs.retention import Decision, Item, Policy, decide
from backup.jobs.schedule import parse_duration, parse_schedule
from backup.selectors import VolumeSelector, parse_label, path_excluded, pick_volumes, validate_patterns

UTC = timezone.utc
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# -- retention -------------------------------------------------------------------------------------


def test_policy_describes_its_rules():
    assert Policy(keep_last=2, keep_daily=7).describe() == "keep_last=2 keep_daily=7"
    assert Policy().describe() == "none"


def test_decide_takes_manifests_and_keeps_their_ids_and_times():
    manifests = [_manifest(stamp="20261127T100000Z-0001"), _manifest(stamp="20261126T100000Z-0002")]
    decisions = decide(manifests, Policy(keep_last=1), NOW)
    assert [(d.id, d.created, d.keep) for d in decisions] == [
        ("db@20261127T100000Z-0001", manifests[0].created, True),
        ("db@20261126T100000Z-0002", manifests[1].created, False),
    ]
    assert decisions[0].reason == "last 1" and decisions[1].reason == "no keep rule matched"


def test_decisions_carry_the_creation_time_and_every_reason():
    items = [Item("a", NOW - timedelta(hours=1)), Item("b", NOW - timedelta(days=1))]
    decisions = decide(items, Policy(keep_last=1, keep_daily=2), NOW)
    assert decisions[0] == Decision("a", items[0].created, True, ("last 1", "daily 2026-11-27"))
    assert decisions[0].reason == "last 1, daily 2026-11-27"
    assert decisions[1].created == items[1].created


def test_naive_times_are_refused_by_name():
    with pytest.raises(ValueError, match="^backup times must be timezone-aware$"):
        decide([Item("a", datetime(2026, 1, 1))], Policy(keep_last=1), NOW)


def test_a_policy_without_rules_keeps_everything_and_says_so():
    decisions = decide([Item("a", NOW), Item("b", NOW - timedelta(days=400))], Policy(), NOW)
    assert [d.reasons for d in decisions] == [("no keep rule set",), ("no keep rule set",)]


def test_the_clock_skew_reason_is_spelled_out():
    (decision,) = decide([Item("f", NOW + timedelta(minutes=1))], Policy(keep_daily=1), NOW)
    assert decision.reasons == ("daily 2026-11-27", "newer than now (clock skew)")


@pytest.mark.parametrize("bad", [-1, True, 1.5, "2"])
def test_policy_counts_must_be_whole_numbers(bad):
    with pytest.raises(ValueError, match="keep_daily must be a whole number >= 0"):
        Policy(keep_daily=bad)


# -- naming ----------------------------------------------------------------------------------------


def test_new_stamps_are_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        stamp = new_stamp(datetime(2026, 11, 27, 23, 4, 5, tzinfo=timezone(timedelta(hours=2))))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert stamp.startswith("20261127T210405Z-")


def test_new_stamps_get_four_random_hex_digits():
    stamps = {new_stamp(NOW) for _ in range(20)}
    assert all(STAMP.fullmatch(s) for s in stamps) and len(stamps) > 1
    assert new_stamp(NOW, "beef") == "20261127T120000Z-beef"


def test_manifest_and_archive_keys_parse_back_exactly():
    stamp = "20261127T230405Z-1a2b"
    assert backup_id_from_manifest_key(f"db/{stamp}.json") == BackupId("db", stamp)
    assert backup_id_from_archive_key(f"db/{stamp}.tar.zst") == BackupId("db", stamp)
    # A key whose last five characters only look like the suffix is no manifest.
    assert backup_id_from_manifest_key(f"db/{stamp}xjson") is None
    for key in (f"{stamp}.json", f"db/x/{stamp}.json", f"db/{stamp}.tar.zst", f"-db/{stamp}.json", f"db/{stamp}.json.tmp"):
        assert backup_id_from_manifest_key(key) is None, key
    assert backup_id_from_archive_key(f"db/{stamp}.json") is None
    assert stamp_time(stamp) == datetime(2026, 11, 27, 23, 4, 5, tzinfo=UTC)
    with pytest.raises(UsageError, match="invalid backup stamp"):
        stamp_time("2026-11-27")
    with pytest.raises(UsageError, match=r"invalid backup id 'db@x': expected VOLUME@YYYYMMDDTHHMMSSZ-xxxx"):
        parse_backup_id("db@x")


@pytest.mark.parametrize(
    "container, destination, expected",
    [
        ("Web", "/Data/Cache", "Web.Data_Cache"),  # capitals are allowed in volume names
        ("/web", "/var/lib/data/", "web.var_lib_data"),  # the container's leading "/" (inspect) goes
        ("my app", "/Xray/", "my-app.Xray"),
        ("db", "/a:b", "db.a-b"),
        ("web", "/", "web.root"),
        ("Xray", "/d", "Xray.d"),
        ("c" * 200, "/" + "d" * 100, "c" * 200 + "." + "d" * 54),  # cut to Docker's 255 characters
    ],
)
def test_mount_storage_names(container, destination, expected):
    assert mount_storage_name(container, destination) == expected


# -- selectors -------------------------------------------------------------------------------------


def test_label_selector_errors_name_the_problem():
    with pytest.raises(UsageError, match=r"^invalid label selector '=x': expected KEY=VALUE$"):
        parse_label("=x")
    assert parse_label(" env = prod") == ("env", " prod")


def test_label_selection_looks_past_a_volume_that_does_not_match():
    listing = [
        {"Name": "a", "Labels": {"env": "dev"}},
        {"Name": "b", "Labels": {"env": "prod"}},
        {"Name": "c", "Labels": None},
        {"Name": "d", "Labels": {"com.docker.compose.project": "shop"}},
        {"Name": "e", "Labels": {"com.docker.compose.project": "shop", "env": "prod"}},
    ]
    assert pick_volumes(VolumeSelector(labels={"env": "prod"}), listing) == ["b", "e"]
    assert pick_volumes(VolumeSelector(projects=("shop",)), listing) == ["d", "e"]
    assert pick_volumes(VolumeSelector(projects=("shop",), labels={"env": ""}), listing) == ["e"]


@pytest.mark.parametrize(
    "path, pattern",
    [("a//b", "a/b"), ("./a/./b/c", "a/b"), ("a/b", "./a/b"), ("a/b", "/a/./b/"), ("x/a/b", "**/a/b")],
)
def test_empty_and_dot_components_are_ignored_on_both_sides(path, pattern):
    assert path_excluded(path, [pattern])


@pytest.mark.parametrize("pattern", ["", "  ", "/", "//", ".", "./", "/./"])
def test_patterns_that_would_leave_out_everything_or_nothing_are_refused(pattern):
    with pytest.raises(UsageError, match="it would leave out everything or nothing"):
        validate_patterns([pattern])


def test_dotdot_patterns_are_refused_by_name():
    with pytest.raises(UsageError, match=r"^invalid exclude pattern 'a/\.\./b': '\.\.' is not allowed$"):
        validate_patterns(["a/../b"])
    assert validate_patterns(["..x/y", "/cache", "X", "/X/"]) == ("..x/y", "/cache", "X", "/X/")


# -- schedules -------------------------------------------------------------------------------------


def test_duration_edges():
    assert parse_duration(0) == 0.0 and parse_duration(0.5) == 0.5
    assert parse_duration("1h 30m") == 5400.0 and parse_duration(" 90 ") == 90.0
    with pytest.raises(ValueError, match=r"^not a duration: True$"):
        parse_duration(True)
    with pytest.raises(ValueError, match=r"^duration must not be negative: -1$"):
        parse_duration(-1)
    with pytest.raises(ValueError, match="not a duration: '1hx'"):
        parse_duration("1hx")


@pytest.mark.parametrize("weekday", ["monday", "mo", "8", "-1"])
def test_weekdays_are_numbers_or_three_letter_names(weekday):
    with pytest.raises(ValueError, match="bad crontab schedule"):
        parse_schedule(f"0 3 * * {weekday}", "UTC")


# -- manifests -------------------------------------------------------------------------------------


def _manifest(stamp: str = "20261127T230405Z-1a2b", **overrides) -> Manifest:
    fields = dict(
        backup_id=BackupId("db", stamp), created=stamp_time(stamp).replace(microsecond=123000),
        volume_labels={"l": "v"}, volume_driver="local", volume_driver_opts={"o": "p"}, source_hostname="h",
        source_docker_id="d", volsafe_version="1", tar_size=10, stored_size=5, sha256="ab" * 32, entries=2,
    )
    fields.update(overrides)
    return Manifest(**fields)


def _data(**overrides) -> dict:
    return json.loads(_manifest(**overrides).to_json())


@pytest.mark.parametrize(
    "overrides, record",
    [
        (dict(encryption_recipients=("age1abc", "ssh-ed25519 x")), {"format": AGE_FORMAT, "recipients": ["age1abc", "ssh-ed25519 x"]}),
        (dict(encryption_recipients=(), encryption_passphrase=True), {"format": AGE_FORMAT, "recipients": [], "passphrase": True}),
    ],
)
def test_encrypted_manifests_round_trip(overrides, record):
    manifest = _manifest(**overrides)
    assert json.loads(manifest.to_json())["archive"]["encryption"] == record
    parsed = parse_manifest(manifest.to_json())
    assert parsed == manifest and parsed.encrypted


def test_a_passphrase_record_needs_no_recipients_list():
    data = _data()
    data["archive"]["encryption"] = {"format": AGE_FORMAT, "passphrase": True}
    parsed = parse_manifest(json.dumps(data))
    assert parsed.encryption_passphrase is True and parsed.encryption_recipients == () and parsed.encrypted
    data["archive"]["encryption"] = {"format": AGE_FORMAT, "passphrase": False, "recipients": ["age1x"]}
    parsed = parse_manifest(json.dumps(data))
    assert parsed.encryption_passphrase is False and parsed.encryption_recipients == ("age1x",)
    data["archive"].pop("encryption")
    parsed = parse_manifest(json.dumps(data))
    assert parsed.encryption_recipients is None and not parsed.encryption_passphrase and not parsed.encrypted


@pytest.mark.parametrize(
    "record, message",
    [
        ({"format": "gpg", "recipients": []}, "^manifest field 'archive.encryption.format' names an unknown encryption format$"),
        ({"recipients": []}, "^manifest lacks field 'archive.encryption.format'$"),
        ({"format": 1, "recipients": []}, "^manifest field 'archive.encryption.format' has the wrong type$"),
        ({"format": AGE_FORMAT}, "^manifest lacks field 'archive.encryption.recipients'$"),
        ({"format": AGE_FORMAT, "passphrase": False}, "^manifest lacks field 'archive.encryption.recipients'$"),
        ({"format": AGE_FORMAT, "recipients": "age1x"}, "^manifest field 'archive.encryption.recipients' has the wrong type$"),
        ({"format": AGE_FORMAT, "recipients": ["age1x", 2]}, "^manifest field 'archive.encryption.recipients' must be a list of strings$"),
        ({"format": AGE_FORMAT, "passphrase": "yes", "recipients": []}, "^manifest field 'archive.encryption.passphrase' has the wrong type$"),
        ({"format": AGE_FORMAT, "passphrase": 1, "recipients": []}, "^manifest field 'archive.encryption.passphrase' has the wrong type$"),
        ({"format": AGE_FORMAT, "passphrase": True, "recipients": ["age1x"]}, "^manifest field 'archive.encryption' names both a passphrase and recipients$"),
        ({"format": AGE_FORMAT, "passphrase": True, "recipients": 5}, "^manifest field 'archive.encryption.recipients' has the wrong type$"),
    ],
)
def test_bad_encryption_records_name_the_problem(record, message):
    data = _data()
    data["archive"]["encryption"] = record
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(data))


def test_mount_and_exclude_round_trip_and_bad_ones_name_the_problem():
    mount = {"type": "bind", "source": "/srv", "destination": "/data", "container": "web"}
    manifest = _manifest(mount=mount, excluded_paths=("*.log", "/cache"))
    data = json.loads(manifest.to_json())
    assert data["mount"] == mount and data["exclude"] == ["*.log", "/cache"]
    assert parse_manifest(manifest.to_json()) == manifest
    for key in ("type", "source", "destination"):
        broken = dict(data, mount={k: v for k, v in mount.items() if k != key})
        with pytest.raises(ManifestError, match=f"^manifest lacks field 'mount.{key}'$"):
            parse_manifest(json.dumps(broken))
    with pytest.raises(ManifestError, match=r"^manifest field 'mount.type' is not one of volume, bind, tmpfs$"):
        parse_manifest(json.dumps(dict(data, mount=dict(mount, type="nfs"))))
    with pytest.raises(ManifestError, match=r"^manifest field 'exclude' must be a list of strings$"):
        parse_manifest(json.dumps(dict(data, exclude=["a", 1])))
    with pytest.raises(ManifestError, match=r"^manifest field 'exclude' has the wrong type$"):
        parse_manifest(json.dumps(dict(data, exclude="*.log")))


def test_fields_are_written_only_when_set_and_unknown_ones_are_kept():
    plain = _data()
    assert "content_digest" not in plain["archive"] and "encryption" not in plain["archive"]
    assert "mount" not in plain and "exclude" not in plain
    digest = "tree-sha256:" + "0" * 64
    manifest = _manifest(content_digest=digest, extra={"note": {"by": "test"}})
    data = json.loads(manifest.to_json())
    assert data["archive"]["content_digest"] == digest and data["note"] == {"by": "test"}
    parsed = parse_manifest(manifest.to_json())
    assert parsed.extra == {"note": {"by": "test"}} and parsed.content_digest == digest and parsed.volume == "db"
    assert data["archive"]["key"] == "db/20261127T230405Z-1a2b.tar.zst" and data["format_version"] == 1
    assert data["volume"] == {"name": "db", "labels": {"l": "v"}, "driver": "local", "driver_opts": {"o": "p"}}
    assert data["source"] == {"hostname": "h", "docker_id": "d"}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["archive"].__setitem__("sha256", "AB" * 32), "^manifest field 'archive.sha256' is not a sha256 hex digest$"),
        (lambda d: d["archive"].__setitem__("sha256", "ab" * 31), "^manifest field 'archive.sha256' is not a sha256 hex digest$"),
        (lambda d: d["archive"].__setitem__("compression", "gzip"), "^unsupported compression 'gzip'$"),
        (lambda d: d["archive"].__setitem__("content_digest", "tree-sha256:" + "0" * 63), "^manifest field 'archive.content_digest' is not a tree-sha256 digest$"),
        (lambda d: d["archive"].__setitem__("content_digest", "tree-sha256:" + "0" * 64 + "\n"), "^manifest field 'archive.content_digest' is not a tree-sha256 digest$"),
        (lambda d: d["archive"].__setitem__("content_digest", 5), "'archive.content_digest' has the wrong type"),
        (lambda d: d["archive"].__setitem__("tar_size", -1), "^manifest field 'archive.tar_size' is negative$"),
        (lambda d: d["archive"].__setitem__("entries", -1), "^manifest field 'archive.entries' is negative$"),
        (lambda d: d["archive"].__setitem__("compression_level", "3"), "'archive.compression_level' has the wrong type"),
        (lambda d: d.__setitem__("format_version", "1"), "'format_version' has the wrong type"),
        (lambda d: d.__setitem__("format_version", 3), "^manifest format 3 is newer than this volsafe understands; upgrade volsafe$"),
        (lambda d: d.__setitem__("created", "2026-11-27T23:04:05.123"), "^manifest field 'created' is not an ISO 8601 UTC time$"),
        (lambda d: d["volume"].__setitem__("driver_opts", {"o": 1}), "'volume.driver_opts' must map strings to strings"),
        (lambda d: d["volume"].__setitem__("labels", []), "'volume.labels' has the wrong type"),
        (lambda d: d.__setitem__("volume", "db"), "^manifest lacks field 'volume.name'$"),
        (lambda d: d.__setitem__("id", 5), "^manifest has a bad id: manifest field 'id' has the wrong type$"),
    ],
)
def test_each_bad_field_is_named(change, message):
    data = _data()
    change(data)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(data))


def test_format_version_zero_and_boolean_types():
    data = _data()
    data["format_version"] = 0
    assert parse_manifest(json.dumps(data)).entries == 2  # older versions are read
    data["format_version"] = True
    with pytest.raises(ManifestError, match="'format_version' has the wrong type"):
        parse_manifest(json.dumps(data))
    data = _data(encryption_recipients=(), encryption_passphrase=True)
    data["archive"]["encryption"]["passphrase"] = True  # a bool where a bool is expected is fine
    assert parse_manifest(json.dumps(data)).encryption_passphrase


def test_times_are_utc_with_milliseconds():
    assert format_time(datetime(2026, 1, 2, 4, 5, 6, 789999, tzinfo=timezone(timedelta(hours=1)))) == "2026-01-02T03:05:06.789Z"
    assert parse_time("2026-01-02T03:05:06.789Z") == datetime(2026, 1, 2, 3, 5, 6, 789000, tzinfo=UTC)
    assert parse_time("2026-01-02T03:05:06Z") == datetime(2026, 1, 2, 3, 5, 6, tzinfo=UTC)
    for bad in ("2026-01-02T03:05:06", "2026-01-02 03:05:06Z", "Z"):
        with pytest.raises(ValueError):
            parse_time(bad)


# -- schedules: crontab weekdays, @every, jitter -------------------------------------------------

from backup.jobs.schedule import _crontab_weekdays  # noqa: E402 - the pure translation step itself


@pytest.mark.parametrize(
    "field, days",
    [
        ("*", "*"),
        ("?", "*"),
        ("1,3", "mon,wed"),
        ("*/2", "sun,tue,thu,sat"),
        ("*/1", "sun,mon,tue,wed,thu,fri,sat"),
        ("1-5/2", "mon,wed,fri"),
        ("5/1", "fri,sat"),  # N/STEP: from N to the end of the week
        ("5", "fri"),
        ("5-7", "sun,fri,sat"),
        ("5-0", "sun,fri,sat"),
        ("7", "sun"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("SAT,sun", "sun,sat"),
    ],
)
def test_crontab_weekdays_become_day_names(field, days):
    assert _crontab_weekdays(field) == days


@pytest.mark.parametrize(
    "field, message",
    [("*/0", "bad step in day-of-week '\\*/0'"), ("*/x", "bad step in day-of-week"), ("6-1", "bad day-of-week range '6-1'"),
     ("8", "bad day of week '8' \\(use 0-7 or sun-sat\\)"), ("monday", "bad day of week 'monday'")],
)
def test_bad_crontab_weekdays(field, message):
    with pytest.raises(ValueError, match=message):
        _crontab_weekdays(field)


def test_every_and_jitter_and_time_zone_reach_the_trigger():
    from zoneinfo import ZoneInfo

    every = parse_schedule("@every 1s", "Europe/Berlin", jitter=30)
    assert every.interval.total_seconds() == 1 and every.jitter == 30 and every.timezone == ZoneInfo("Europe/Berlin")
    assert parse_schedule("@every 1.5s").interval.total_seconds() == 1.5
    assert parse_schedule("@every 1h").jitter is None
    cron = parse_schedule("0 3 * * 1", "UTC", jitter=12.4)
    assert cron.jitter == 12
    assert parse_schedule("0 3 * * 1", "UTC").jitter is None
    with pytest.raises(ValueError, match=r"^'@every' needs a duration, e.g. '@every 6h'$"):
        parse_schedule("@every")
    with pytest.raises(ValueError, match="is shorter than one second"):
        parse_schedule("@every 500ms")
    with pytest.raises(ValueError, match=r"use a crontab line, @hourly, @daily, @midnight, @weekly"):
        parse_schedule("@fortnightly")


# -- the archive codec -----------------------------------------------------------------------------

import io  # noqa: E402
import tarfile  # noqa: E402

import zstandard  # noqa: E402

from backup.archive import codec  # noqa: E402
from backup.archive.codec import ArchiveStats, checked_backup_tar, coalesce, compress_tar, verified_tar  # noqa: E402
from backup.archive.tar.scanner import HostileArchiveError  # noqa: E402
from backup.errors import IntegrityError  # noqa: E402
from tests.support.archive_factory import SAMPLE, make_tar  # noqa: E402


def test_coalesce_joins_into_pieces_of_at_least_size():
    assert [len(p) for p in coalesce([b"abc"] * 5, size=6)] == [6, 6, 3]
    assert [len(p) for p in coalesce([b"abcdefg", b"a", b"bcdef", b"x"], size=6)] == [7, 6, 1]
    assert b"".join(coalesce([b"ab", b"cd"], size=100)) == b"abcd"


def test_default_threads_is_one_per_cpu(monkeypatch):
    monkeypatch.setattr(codec.os, "cpu_count", lambda: None)
    assert codec.default_threads() == 1
    monkeypatch.setattr(codec.os, "cpu_count", lambda: 5)
    assert codec.default_threads() == 5


def _stored(tar: bytes, threads=1) -> tuple[bytes, ArchiveStats, int]:
    stats, seen = ArchiveStats(), []
    stored = b"".join(compress_tar([tar[i : i + 3000] for i in range(0, len(tar), 3000)], stats, threads=threads, progress=seen.append))
    return stored, stats, sum(seen)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_compress_tar_measures_what_it_read_and_wrote(threads):
    tar = make_tar(SAMPLE)
    stored, stats, progressed = _stored(tar, threads)
    assert progressed == len(tar) == stats.tar_size
    assert stats.stored_size == len(stored) and stats.entries == len(SAMPLE)
    import hashlib

    assert stats.sha256 == hashlib.sha256(stored).hexdigest()
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read() == tar


class _M:
    """The fields of a manifest that checked_backup_tar reads."""

    def __init__(self, stored: bytes, stats: ArchiveStats, **changes):
        import hashlib

        self.sha256, self.stored_size = hashlib.sha256(stored).hexdigest(), len(stored)
        self.entries, self.content_digest = stats.entries, stats.content_digest
        self.tar_size = stats.tar_size  # enforced: the tar must be exactly this long
        self.__dict__.update(changes)


def test_checked_backup_tar_checks_entries_keeps_headers_and_refuses_hostile_entries():
    tar = make_tar(SAMPLE)
    stored, stats, _ = _stored(tar)
    sink = io.BytesIO()
    # verify reads the stored tar as it is; restore's canonical stream re-emits the same entries
    assert b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats), decrypt=None, canonical=False)) == tar
    canonical = b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats), decrypt=None, metadata_sink=sink))
    with tarfile.open(fileobj=io.BytesIO(tar)) as original, tarfile.open(fileobj=io.BytesIO(canonical)) as emitted:
        def entries(tar):  # the canonical stream writes names without the leading "./"
            return [(m.name.removeprefix("./"), m.type, m.size, m.mode) for m in tar]

        assert entries(emitted) == entries(original)
    kept = tarfile.open(fileobj=io.BytesIO(sink.getvalue() + bytes(1024)))
    assert [m.name for m in kept] == [".", "dir", "abs-link"]  # directories and symlinks, as re-emitted
    with pytest.raises(IntegrityError, match=r"^archive holds 5 entries, but its manifest says 6$"):
        b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats, entries=6, content_digest=""), decrypt=None))
    hostile = make_tar([("./x", tarfile.REGTYPE, b"1"), ("./../escape", tarfile.REGTYPE, b"2")])
    stored, stats, _ = _stored(hostile)
    with pytest.raises(HostileArchiveError):
        b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats), decrypt=None))


def _verify(stored: bytes, stats: ArchiveStats, **kwargs) -> bytes:
    import hashlib

    return b"".join(
        verified_tar(io.BytesIO(stored), expected_sha256=hashlib.sha256(stored).hexdigest(), expected_size=len(stored),
                     expected_entries=stats.entries, expected_content_digest=stats.content_digest, **kwargs)
    )


def test_verified_tar_only_refuses_hostile_entries_when_asked():
    hostile = make_tar([("./x", tarfile.REGTYPE, b"1"), ("/etc/escape", tarfile.REGTYPE, b"2")])
    stored, stats, _ = _stored(hostile)
    assert _verify(stored, stats) == hostile  # verify and backups read such archives; restore refuses them
    with pytest.raises(HostileArchiveError):
        _verify(stored, stats, refuse_hostile=True)


def test_verified_tar_reads_across_zstd_frames_and_names_a_checksum_mismatch():
    tar = make_tar(SAMPLE)
    half = len(tar) // 2
    frames = zstandard.ZstdCompressor().compress(tar[:half]) + zstandard.ZstdCompressor().compress(tar[half:])
    _, stats, _ = _stored(tar)
    assert _verify(frames, stats) == tar
    import hashlib

    with pytest.raises(IntegrityError, match=r"^archive checksum does not match its manifest \(sha256 mismatch\)$"):
        b"".join(verified_tar(io.BytesIO(frames), expected_sha256=hashlib.sha256(b"x").hexdigest(), expected_size=len(frames), expected_entries=None))
    with pytest.raises(IntegrityError, match=r"^archive content digest does not match its manifest \(entries or data differ\)$"):
        _verify(frames, ArchiveStats(entries=stats.entries, content_digest="tree-sha256:" + "0" * 64))


def test_verified_tar_reports_progress_in_stored_bytes_and_hands_plain_bytes_on():
    tar = make_tar(SAMPLE + [("./big", tarfile.REGTYPE, bytes(range(256)) * 9000)])
    stored, stats, _ = _stored(tar)
    seen = []

    class Views(io.BytesIO):
        def read(self, size=-1):  # a stream that returns memoryviews, as some readers do
            return memoryview(super().read(size))

    assert _verify(stored, stats, progress=seen.append) == tar and sum(seen) == len(stored)
    import hashlib

    out = b"".join(verified_tar(Views(stored), expected_sha256=hashlib.sha256(stored).hexdigest(), expected_size=len(stored), expected_entries=None))
    assert out == tar


def test_encrypted_stored_measures_the_encrypted_bytes(monkeypatch):
    import hashlib

    from backup.crypto import age_scrypt
    from backup.crypto.encryption import Passphrase

    real_encrypt = age_scrypt.encrypt
    monkeypatch.setattr(age_scrypt, "encrypt", lambda chunks, key: real_encrypt(chunks, key, work_factor=10))  # fast scrypt
    tar = make_tar(SAMPLE)
    stored, stats, _ = _stored(tar)
    key = Passphrase(b"pw")
    encrypted = b"".join(codec.encrypted_stored([stored[:100], stored[100:]], key, stats))
    assert encrypted.startswith(b"age-encryption.org/v1\n")
    assert stats.stored_size == len(encrypted) and stats.sha256 == hashlib.sha256(encrypted).hexdigest()
    assert stats.tar_size == len(tar) and stats.entries == len(SAMPLE)  # what compress_tar measured stays
    assert age_scrypt.DecryptingReader(io.BytesIO(encrypted), key).read() == stored
    # And it reads back through the checks, decrypted on the way (the sha256 covers the stored bytes).
    decrypt = lambda raw: age_scrypt.DecryptingReader(raw, key)  # noqa: E731
    manifest = _M(encrypted, stats)
    assert b"".join(checked_backup_tar(io.BytesIO(encrypted), manifest, decrypt=decrypt, canonical=False)) == tar
    with pytest.raises(IntegrityError):
        b"".join(checked_backup_tar(io.BytesIO(encrypted), manifest, decrypt=None))


def test_more_manifest_and_naming_edges(monkeypatch):
    data = _data()
    assert data["archive"]["format"] == "tar" and data["format"] == "volsafe-manifest"
    zero = _data(tar_size=0, stored_size=0, entries=0)
    assert parse_manifest(json.dumps(zero)).entries == 0  # an empty volume is a valid backup
    with pytest.raises(ManifestError, match="^not a volsafe manifest$"):
        parse_manifest(json.dumps({"format": "other"}))
    with pytest.raises(ManifestError, match="is not a sha256 hex digest"):
        parse_manifest(json.dumps(dict(data, archive=dict(data["archive"], sha256="X" * 64))))
    with pytest.raises(ManifestError, match="^manifest volume name does not match its id$"):
        parse_manifest(json.dumps(dict(data, volume=dict(data["volume"], name="web"))))
    with pytest.raises(ValueError, match="^yesterday$"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match=r"^2026-13-01T00:00:00Z$"):
        parse_time("2026-13-01T00:00:00Z")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # A REF is split at its last "@": volume names cannot hold one, so "a@b@STAMP" is no REF.
    from backup.archive.naming import parse_ref

    with pytest.raises(UsageError):
        parse_ref("a@b@20261127T230405Z-1a2b")
    with pytest.raises(UsageError):
        parse_backup_id("a@b@20261127T230405Z-1a2b")


def test_compress_tar_counts_every_stored_chunk():
    import hashlib
    import random

    tar = make_tar([(".", tarfile.DIRTYPE, b""), ("./noise", tarfile.REGTYPE, random.Random(3).randbytes(3 << 20))])
    stored, stats, progressed = _stored(tar)
    assert stats.stored_size == len(stored) > 3 << 20 and stats.sha256 == hashlib.sha256(stored).hexdigest()
    assert progressed == len(tar)


def test_a_one_character_ustar_prefix_is_read():
    from backup.archive.codec import tree_digest

    raw = bytearray(make_tar([("./f", tarfile.REGTYPE, b"x")]))
    raw[0:100] = b"f".ljust(100, b"\x00")
    raw[257:263] = b"ustar\x00"
    raw[345:500] = b"a".ljust(155, b"\x00")
    raw[148:156] = b"        "
    raw[148:156] = b"%06o\x00 " % sum(raw[0:512])
    expected = make_tar([("a/f", tarfile.REGTYPE, b"x")])
    assert tree_digest([bytes(raw)])[0] == tree_digest([expected])[0]


def test_header_checksums_count_high_bytes():
    from backup.archive.codec import tree_digest

    name = ("./" + "\u00ff" * 40).encode()  # many bytes of 0xc3/0xbf: sums past one 16-bit half
    raw = make_tar([(name.decode(), tarfile.REGTYPE, b"x")])
    assert tree_digest([raw])[1] == 1


def test_sealed_fields_are_parsed_strictly():
    from backup.archive.manifest import MAX_SEALED_SIZE, parse_sealed_fields
    from backup.bounds import MAX_DEPTH

    digest = "tree-sha256:" + "a" * 64
    fields = {"tar_size": 10, "entries": 2, "content_digest": digest}
    good = json.dumps(fields).encode()
    assert parse_sealed_fields(good) == (10, 2, digest)
    at_limit = good[:-1] + b" " * (MAX_SEALED_SIZE - len(good)) + b"}"  # exactly the limit is read
    assert len(at_limit) == MAX_SEALED_SIZE and parse_sealed_fields(at_limit) == (10, 2, digest)
    deep = json.dumps(dict(fields, x=[])).encode().replace(b"[]", b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert json.loads(deep)  # valid JSON, refused for its depth alone
    for raw in (at_limit[:-1] + b" }", deep, b"[]", b'"text"', b"\xff{}", b"{"):
        with pytest.raises(ManifestError, match="^manifest's sealed metadata is not a JSON object$"):
            parse_sealed_fields(raw)
    with pytest.raises(ManifestError, match="^manifest field 'archive.content_digest' is not a tree-sha256 digest$"):
        parse_sealed_fields(json.dumps(dict(fields, content_digest="md5:00")).encode())


def test_checked_backup_tar_refuses_hostile_entries_and_enforces_the_tar_size_when_only_checking():
    # verify reads with canonical=False: the refusal and the tar-size bound must not rely on the re-emission.
    hostile = make_tar([("./x", tarfile.REGTYPE, b"1"), ("./../escape", tarfile.REGTYPE, b"2")])
    stored, stats, _ = _stored(hostile)
    with pytest.raises(HostileArchiveError):
        b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats), decrypt=None, canonical=False))
    tar = make_tar(SAMPLE)
    stored, stats, _ = _stored(tar)
    refused = r"records: refused \(stopped there, nothing past them was extracted\)$"
    with pytest.raises(IntegrityError, match=rf"^archive decompresses to more than the {len(tar) - 512} bytes of tar its manifest {refused}"):
        b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats, tar_size=len(tar) - 512), decrypt=None, canonical=False))
    with pytest.raises(IntegrityError, match=rf"^archive holds a tar of {len(tar)} bytes, but its manifest says {len(tar) + 512}$"):
        b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats, tar_size=len(tar) + 512), decrypt=None, canonical=False))


def test_retention_future_rule_boundary_and_reason():
    from backup.jobs.retention import FUTURE_TOLERANCE

    items = [Item("at-horizon", NOW + FUTURE_TOLERANCE), Item("beyond", NOW + FUTURE_TOLERANCE + timedelta(seconds=1)),
             Item("old", NOW - timedelta(days=30))]
    decisions = {d.id: d for d in decide(items, Policy(keep_last=1), NOW)}
    assert decisions["at-horizon"].reasons == ("last 1", "newer than now (clock skew)")  # at now + tolerance: still counted
    assert decisions["beyond"].keep and not decisions["beyond"].counted and decisions["at-horizon"].counted
    assert decisions["beyond"].reasons == ("created in the future (beyond now + clock skew): kept, not counted",)
    assert not decisions["old"].keep


def test_the_tar_size_bound_counts_every_chunk():
    import random

    big = make_tar([(".", tarfile.DIRTYPE, b""), ("./noise", tarfile.REGTYPE, random.Random(5).randbytes(3 << 20))])
    stored, stats, _ = _stored(big)
    with pytest.raises(IntegrityError, match=rf"^archive decompresses to more than the {len(big) - 1024} bytes"):
        b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats, tar_size=len(big) - 1024), decrypt=None, canonical=False))


def test_the_canonical_stream_keeps_every_attribute_a_reader_sees():
    # What restore extracts is re-emitted from the checked entries: link targets (short and long),
    # owners, times and device numbers must come out as tarfile reads them from the original.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name, kind, data=b"", **attrs):
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode, info.mtime = kind, len(data), 0o640, 1_700_000_000
            info.uid, info.gid = 1000, 1001
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("./", tarfile.DIRTYPE, mode=0o755)
        add("./file", tarfile.REGTYPE, b"data", uid=0, gid=0, mtime=0)
        add("./short-link", tarfile.SYMTYPE, linkname="file")
        add("./long-link", tarfile.SYMTYPE, linkname="d/" + "t" * 120)
        add("./hard", tarfile.LNKTYPE, linkname="./file")
        add("./tty", tarfile.CHRTYPE, devmajor=4, devminor=64)
        add("./" + "n" * 100, tarfile.REGTYPE, b"x")  # a name of exactly 100 bytes
        add("./big-ids", tarfile.REGTYPE, b"y", uid=8**7, gid=8**7, mtime=8**11)  # just past the octal fields
        add("./before-1970", tarfile.REGTYPE, b"z", mtime=-1000)
    original = buffer.getvalue()
    stored, stats, _ = _stored(original)
    emitted = b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats), decrypt=None))

    def seen(raw):
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            return [(m.name.removeprefix("./").rstrip("/"), m.type, m.size, m.mode, m.uid, m.gid, m.mtime,
                     m.linkname.removeprefix("./"), m.devmajor, m.devminor) for m in tar]

    assert seen(emitted) == seen(original)

def test_a_manifest_of_exactly_the_size_limit_is_read_and_one_byte_more_is_not():
    from backup.archive.manifest import MAX_MANIFEST_SIZE

    raw = _manifest().to_json()
    at_limit = raw + b" " * (MAX_MANIFEST_SIZE - len(raw))
    assert parse_manifest(at_limit) == _manifest()
    with pytest.raises(ManifestError, match=rf"^manifest is larger than {MAX_MANIFEST_SIZE} bytes$"):
        parse_manifest(at_limit + b" ")


def test_a_manifest_is_decoded_as_json_loads_decodes_bytes():
    # A lone surrogate written raw (as some encoders do) is read, as json.loads reads it, not refused.
    raw = _manifest().to_json().replace(b'"format": "volsafe-manifest",', b'"format": "volsafe-manifest", "note": "\xed\xa0\x80",')
    assert json.loads(raw)["note"] == "\ud800"
    assert parse_manifest(raw).extra == {"note": "\ud800"}


def test_a_manifest_that_nests_too_deep_is_refused_by_name():
    from backup.bounds import MAX_DEPTH

    deep = json.dumps(dict(_data(), note=[])).replace("[]", "[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(ManifestError, match=rf"^manifest nests arrays or objects more than {MAX_DEPTH} deep$"):
        parse_manifest(deep)


def _sealed(metadata: str) -> Manifest:
    return _manifest(tar_size=None, entries=None, encryption_recipients=("age1x",), sealed_metadata=metadata)


def test_sealed_metadata_of_exactly_the_size_limit_is_read_and_one_more_character_is_not():
    from backup.archive.manifest import MAX_SEALED_SIZE

    at_limit = _sealed("A" * MAX_SEALED_SIZE)
    assert parse_manifest(at_limit.to_json()) == at_limit
    message = "^manifest field 'archive.encryption.metadata' is not base64 of a small sealed record$"
    for bad in ("A" * (MAX_SEALED_SIZE + 1), "not base64!"):
        with pytest.raises(ManifestError, match=message):
            parse_manifest(_sealed(bad).to_json())


@pytest.mark.parametrize("name, value", [("tar_size", 10), ("entries", 2), ("content_digest", "tree-sha256:" + "0" * 64)])
def test_a_sealed_field_also_kept_in_the_clear_is_refused_by_name(name, value):
    data = json.loads(_sealed("QUJD").to_json())
    data["archive"][name] = value
    with pytest.raises(ManifestError, match=rf"^manifest keeps 'archive.{name}' both sealed and in the clear$"):
        parse_manifest(json.dumps(data))


def test_compress_tar_fills_in_the_scanner_it_is_given():
    # backup passes its own scanner to read the entry count while the stream flows.
    from backup.archive.tar.scanner import TarScanner

    scanner, stats = TarScanner(), ArchiveStats()
    tar = make_tar(SAMPLE)
    b"".join(compress_tar([tar], stats, threads=1, scanner=scanner))
    assert scanner.entries == stats.entries == len(SAMPLE) and scanner.tar_size == len(tar)
    assert scanner.content_digest == stats.content_digest


def test_checking_a_stored_backup_reports_progress_in_stored_bytes():
    # restore and verify show how far they are from this callback.
    tar = make_tar(SAMPLE)
    stored, stats, _ = _stored(tar)
    seen: list[int] = []
    b"".join(checked_backup_tar(io.BytesIO(stored), _M(stored, stats), decrypt=None, canonical=False, progress=seen.append))
    assert sum(seen) == len(stored) and seen


def test_an_archive_of_several_read_sizes_verifies():
    # Stored bytes are handed to the hashing thread a read size at a time: every hand-over must count.
    import random

    tar = make_tar([(".", tarfile.DIRTYPE, b""), ("./noise", tarfile.REGTYPE, random.Random(7).randbytes(5 << 20))])
    stored, stats, _ = _stored(tar)
    assert len(stored) > 4 * codec.READ_SIZE
    assert _verify(stored, stats) == tar


def test_the_stored_bytes_hash_is_of_what_was_read_even_from_a_reused_buffer():
    """A stream may hand back the same bytearray for every read (readinto-style wrappers do): the
    stored-bytes sha256 is computed in another thread later, so each read must be copied first."""
    import hashlib

    from backup.archive.codec import READ_SIZE, _HashingReader
    from backup.streams.background import BackgroundConsumer

    data = bytes(range(256)) * 40

    class ReusedBuffer:
        def __init__(self) -> None:
            self.pos, self.buffer = 0, bytearray()

        def read(self, size: int = -1) -> bytearray:
            chunk = data[self.pos : self.pos + 1000]
            self.pos += len(chunk)
            self.buffer[:] = chunk  # the same object every time, its contents replaced
            return self.buffer

    digest = hashlib.sha256()
    with BackgroundConsumer(digest.update, "sha256") as hasher:
        reader = _HashingReader(ReusedBuffer(), hasher, lambda n: None)  # type: ignore[arg-type]
        got = b"".join(bytes(reader.read(1000)) for _ in range(len(data) // 1000 + 1))
        reader.drain()
        hasher.wait()
    assert got == data and READ_SIZE > 1000  # several reads are pending when they are handed over
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
