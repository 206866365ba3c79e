import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from backup.errors import ManifestError
from backup.archive.manifest import Manifest, parse_manifest
from backup.archive.naming import parse_backup_id


def _manifest(**overrides) -> Manifest:
    fields = dict(
        backup_id=parse_backup_id("db@20261127T230405Z-1a2b"),
        created=datetime(2026, 11, 27, 23, 4, 5, 123000, tzinfo=timezone.utc),
        volume_labels={"com.docker.compose.project": "shop"},
        volume_driver="local",
        volume_driver_opts={},
        source_hostname="web-1",
        source_docker_id="ABCD:EFGH",
        volsafe_version="0.1.0",
        tar_size=10240,
        stored_size=321,
        sha256="ab" * 32,
        entries=7,
    )
    fields.update(overrides)
    return Manifest(**fields)


def test_round_trip():
    manifest = _manifest()
    data = json.loads(manifest.to_json())
    assert data["created"] == "2026-11-27T23:04:05.123Z"
    assert data["volume"]["name"] == "db" and data["archive"]["compression"] == "zstd"
    assert parse_manifest(manifest.to_json()) == manifest


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("archive"), "lacks field 'archive.sha256'"),
        (lambda d: d["archive"].__setitem__("tar_size", "10"), "'archive.tar_size' has the wrong type"),
        (lambda d: d["archive"].__setitem__("entries", True), "'archive.entries' has the wrong type"),
        (lambda d: d["archive"].__setitem__("stored_size", -1), "is negative"),
        (lambda d: d.__setitem__("id", "../../etc@x"), "bad id"),
        (lambda d: d["volume"].__setitem__("name", "other"), "does not match its id"),
        (lambda d: d.__setitem__("created", "yesterday"), "not an ISO 8601"),
        (lambda d: d["volume"].__setitem__("labels", {"a": 1}), "must map strings to strings"),
        (lambda d: d.__setitem__("format_version", 99), "newer than this volsafe"),
    ],
)
def test_invalid_manifests_name_the_problem(mutate, message):
    data = json.loads(_manifest().to_json())
    mutate(data)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(data))


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"\xff\xfe", b'{"format": "other"}'])
def test_not_a_manifest(raw):
    with pytest.raises(ManifestError):
        parse_manifest(raw)


def test_truncated_manifest_is_a_clear_error():
    raw = _manifest().to_json()
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(raw[: len(raw) // 2])


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20))
def test_parser_never_crashes_on_arbitrary_json(value):
    try:
        parse_manifest(json.dumps(value))
    except ManifestError:
        pass
