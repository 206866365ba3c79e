from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from backup.errors import UsageError
from backup.archive.naming import BackupId, Ref, backup_id_from_manifest_key, new_stamp, parse_backup_id, parse_ref


def test_stamp_is_utc_and_sortable():
    when = datetime(2026, 11, 27, 23, 4, 5, tzinfo=timezone.utc)
    assert new_stamp(when, "1a2b") == "20261127T230405Z-1a2b"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pgdata", Ref("pgdata", None)),
        ("pgdata@latest", Ref("pgdata", None)),
        ("my_vol.1-x@20261127T230405Z-1a2b", Ref("my_vol.1-x", BackupId("my_vol.1-x", "20261127T230405Z-1a2b"))),
    ],
)
def test_parse_ref(text, expected):
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "@latest", "../etc", "vol@yesterday", "vol@20261127T230405Z", "a/b", "-vol", "vol\x00",
     "vol\n", "db@20261127T230405Z-1a2b\n", "db\n@20261127T230405Z-1a2b"],
)
def test_bad_refs_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_ref(text)


def test_keys_live_under_the_volume():
    backup_id = parse_backup_id("db@20261127T230405Z-1a2b")
    assert backup_id.archive_key == "db/20261127T230405Z-1a2b.tar.zst"
    assert backup_id.manifest_key == "db/20261127T230405Z-1a2b.json"
    assert backup_id_from_manifest_key(backup_id.manifest_key) == backup_id
    for other in ["db/20261127T230405Z-1a2b.tar.zst", "db/x/20261127T230405Z-1a2b.json", "db/.volsafe-partial-x.json", "x.json"]:
        assert backup_id_from_manifest_key(other) is None


@given(st.text(max_size=80))
def test_ref_parser_accepts_or_raises_usage_error(text):
    try:
        ref = parse_ref(text)
    except UsageError:
        return
    assert "/" not in ref.volume and "\x00" not in ref.volume and not ref.volume.startswith(".")


def test_a_trailing_newline_never_reaches_a_key():
    """``$`` matches before a final newline: a name matched with it would become the key ``db/…\\n.json``."""
    with pytest.raises(UsageError):
        parse_backup_id("db@20261127T230405Z-1a2b\n")
    assert backup_id_from_manifest_key("db/20261127T230405Z-1a2b\n.json") is None
    assert backup_id_from_manifest_key("db\n/20261127T230405Z-1a2b.json") is None


def test_volume_names_are_limited_to_255_characters():
    from backup.archive.naming import validate_volume_name

    assert validate_volume_name("a" * 255) == "a" * 255
    with pytest.raises(UsageError):
        validate_volume_name("a" * 256)
