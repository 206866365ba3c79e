"""Pure selection logic: volume selectors, path excludes, the tar filter, mount names, the overview."""

from __future__ import annotations

import io
import tarfile
from datetime import datetime, timedelta, timezone

import pytest

from backup.actions.backup import MountSource
from backup.actions.select import merge_mounts, mounts_from_inspect
from backup.errors import UsageError
from backup.archive.manifest import parse_manifest
from backup.archive.naming import BackupId, mount_storage_name, new_stamp
from backup.actions.overview import assemble, human_age
from backup.selectors import VolumeSelector, parse_label, path_excluded, pick_volumes, split_excludes
from backup.archive.tar.exclude import FilterStats, exclude_paths
from backup.archive.tar.scanner import TarScanner

LISTING = [
    {"Name": "shop_db", "Labels": {"com.docker.compose.project": "shop", "tier": "db"}},
    {"Name": "shop_cache", "Labels": {"com.docker.compose.project": "shop", "tier": "cache"}},
    {"Name": "blog_db", "Labels": {"com.docker.compose.project": "blog", "tier": "db"}},
    {"Name": "loose", "Labels": None},
]


def test_selectors_pick_by_label_project_all_and_exclude():
    assert pick_volumes(VolumeSelector(labels={"tier": "db"}), LISTING) == ["blog_db", "shop_db"]
    assert pick_volumes(VolumeSelector(labels={"tier": ""}), LISTING) == ["blog_db", "shop_cache", "shop_db"]
    assert pick_volumes(VolumeSelector(projects=("shop",)), LISTING) == ["shop_cache", "shop_db"]
    assert pick_volumes(VolumeSelector(projects=("shop",), labels={"tier": "db"}), LISTING) == ["shop_db"]
    assert pick_volumes(VolumeSelector(all=True, exclude=("shop_*",)), LISTING) == ["blog_db", "loose"]
    assert pick_volumes(VolumeSelector(names=("x",), exclude=("x",)), LISTING) == []
    assert pick_volumes(VolumeSelector(names=("named",)), LISTING) == ["named"]


def test_label_and_exclude_parsing():
    assert parse_label("a=b=c") == ("a", "b=c")
    assert parse_label("key") == ("key", "")
    with pytest.raises(UsageError):
        parse_label("=x")
    assert split_excludes(["db", "/cache", "**/*.log"]) == (("db",), ("/cache", "**/*.log"))
    with pytest.raises(UsageError):
        split_excludes(["../etc"])


@pytest.mark.parametrize(
    "path, patterns, expected",
    [
        ("./cache/a/b", ["cache"], True),
        ("app/cache", ["cache"], True),
        ("app/cache.txt", ["cache"], False),
        ("logs/x.log", ["*.log"], True),
        ("tmp/a", ["/tmp/*"], True),
        ("tmp", ["/tmp/*"], False),
        ("a/tmp/b", ["/tmp"], False),
        ("a/b/node_modules/x", ["**/node_modules"], True),
        (".", ["*"], False),
    ],
)
def test_path_excluded(path, patterns, expected):
    assert path_excluded(path, patterns) is expected


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_filter_drops_entries_with_long_names_and_their_hard_links():
    long_dir = "./" + "d" * 150
    raw = _tar(
        [
            (".", "dir", None),
            ("./keep.txt", "file", b"k" * 1000),
            ("./cache", "dir", None),
            ("./cache/big.bin", "file", b"x" * 70000),
            ("./link-to-cache", "link", "./cache/big.bin"),
            (long_dir, "dir", None),
            (long_dir + "/skip.log", "file", b"log"),
            (long_dir + "/keep.dat", "file", b"data"),
        ]
    )
    stats = FilterStats()
    # Tiny chunks: headers and data cut at every possible place.
    chunks = [raw[i : i + 333] for i in range(0, len(raw), 333)]
    out = b"".join(exclude_paths(iter(chunks), ("cache", "*.log"), stats))
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        members = {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar}
    assert members == {".": None, "./keep.txt": b"k" * 1000, long_dir: None, long_dir + "/keep.dat": b"data"}
    assert stats.excluded == 4 and stats.links_dropped == 1
    scanner = TarScanner()
    scanner.feed(out)
    scanner.finish()  # still a complete, valid tar
    assert scanner.entries == 4


def test_mount_storage_names_are_stable_valid_volume_names():
    assert mount_storage_name("web", "/var/lib/data") == "web.var_lib_data"
    assert mount_storage_name("web", "/") == "web.root"
    assert mount_storage_name("web", "/a b/ü") == "web.a-b_-"
    assert mount_storage_name("web", "/x") == mount_storage_name("web", "/x/")


def test_mounts_from_inspect():
    inspect = {
        "Name": "/app",
        "Mounts": [
            {"Type": "bind", "Source": "/srv/conf", "Destination": "/etc/app"},
            {"Type": "volume", "Name": "appdata", "Destination": "/data"},
            {"Type": "tmpfs", "Source": "", "Destination": "/run/cache"},
        ],
        "HostConfig": {"Tmpfs": {"/scratch": "size=1m", "/run/cache": ""}},
    }
    found = [(m.kind, m.source, m.destination, m.storage_name) for m in mounts_from_inspect(inspect)]
    assert found == [
        ("volume", "appdata", "/data", "appdata"),
        ("bind", "/srv/conf", "/etc/app", "app.etc_app"),
        ("tmpfs", "", "/run/cache", "app.run_cache"),
        ("tmpfs", "", "/scratch", "app.scratch"),
    ]


def test_overview_assembles_sizes_users_projects_and_staleness():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    df = [
        {"Name": "db", "Driver": "local", "Labels": {"com.docker.compose.project": "shop"}, "UsageData": {"Size": 1234}},
        {"Name": "old", "Driver": "local", "Labels": None, "UsageData": {"Size": -1}},
        {"Name": "none", "Driver": "nfs", "Labels": {}, "UsageData": None},
    ]
    containers = [
        {"Names": ["/shop-db-1"], "State": "running", "Labels": {}, "Mounts": [{"Type": "volume", "Name": "db"}]},
        {"Names": ["/shop-old"], "State": "exited", "Labels": {}, "Mounts": [{"Type": "volume", "Name": "db"}]},
        {"Names": ["/volsafe-x"], "State": "created", "Labels": {"io.volsafe.helper": "true"}, "Mounts": [{"Type": "volume", "Name": "old"}]},
    ]
    newest = {
        "file:///a": {"db": BackupId("db", new_stamp(now - timedelta(hours=2), "aaaa")), "old": BackupId("old", new_stamp(now - timedelta(days=3), "bbbb"))},
        "s3://b": {"db": BackupId("db", new_stamp(now - timedelta(days=2), "cccc"))},
    }
    rows = {r.name: r for r in assemble(df, containers, newest, now=now, max_age=24 * 3600)}
    db = rows["db"].to_json()
    assert db["size"] == 1234 and db["project"] == "shop"
    assert db["containers"] == [{"name": "shop-db-1", "running": True}, {"name": "shop-old", "running": False}]
    assert [b["age_seconds"] for b in db["backups"]] == [7200, 2 * 86400]
    assert db["age_seconds"] == 7200 and db["stale"] is False
    assert rows["old"].to_json()["stale"] is True and rows["old"].size is None and rows["old"].containers == []
    assert rows["none"].to_json()["stale"] is True and rows["none"].to_json()["newest_created"] is None
    assert human_age(None) == "never" and human_age(7200) == "2h" and human_age(90) == "1m"


def test_manifest_mount_fields_round_trip_and_old_manifests_still_parse():
    from test_manifest import _manifest

    mount = {"type": "tmpfs", "source": "", "destination": "/run/cache", "container": "app"}
    m = _manifest(mount=mount, excluded_paths=("cache", "**/*.log"))
    parsed = parse_manifest(m.to_json())
    assert parsed.mount == mount and parsed.excluded_paths == ("cache", "**/*.log") and parsed.extra == {}
    plain = parse_manifest(_manifest().to_json())
    assert plain.mount is None and plain.excluded_paths == () and b'"mount"' not in _manifest().to_json()
    bad = m.to_dict()
    bad["mount"]["type"] = "nfs"
    with pytest.raises(Exception, match="mount.type"):
        parse_manifest(__import__("json").dumps(bad))


def test_merge_mounts_excludes_by_storage_name_and_backs_up_a_shared_volume_once():
    mounts = [
        MountSource("volume", "app", "data", "/data", "data"),
        MountSource("volume", "app2", "data", "/d", "data"),
        MountSource("bind", "app", "/srv", "/srv", "app.srv"),
        MountSource("tmpfs", "app", "", "/run", "app.run"),
    ]
    volumes, kept = merge_mounts(["data", "other"], mounts, ("app.r*",))
    assert volumes == ["other"]
    assert [m.storage_name for m in kept] == ["data", "app.srv"]
