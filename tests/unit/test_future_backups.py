"""A backup that claims to come from the future (``created`` in 9999, a clock far ahead) is kept but
never counted by a keep rule, so it cannot push the real backups out; the clock-skew rule for
backups a little ahead still keeps them, newest or not."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from backup.actions.prune import run_prune
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, new_stamp
from backup.jobs.retention import FUTURE_TOLERANCE, Item, Policy, decide
from storage_backends.local import LocalBackend

UTC = timezone.utc
NOW = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
Y9999 = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def decisions(items, policy, now=NOW):
    return {d.id: d for d in decide(items, policy, now)}


def test_a_year_9999_backup_does_not_displace_the_real_newest():
    items = [Item("9999", Y9999), Item("real-new", NOW - timedelta(hours=1)), Item("real-old", NOW - timedelta(days=1))]
    got = decisions(items, Policy(keep_last=1))
    assert {i: d.keep for i, d in got.items()} == {"9999": True, "real-new": True, "real-old": False}
    assert got["real-new"].reasons == ("last 1",)
    assert not got["9999"].counted and got["real-new"].counted
    assert "future" in got["9999"].reason and "not counted" in got["9999"].reason


def test_future_backups_take_no_period_either():
    # Far-future backups on other days and in other months must not use up keep_daily / keep_monthly.
    items = [
        Item("f1", NOW + timedelta(days=2)),
        Item("f2", NOW + timedelta(days=40)),
        Item("d27", NOW - timedelta(hours=2)),
        Item("d26", NOW - timedelta(days=1)),
        Item("d25", NOW - timedelta(days=2)),
        Item("oct", NOW - timedelta(days=45)),
    ]
    got = decisions(items, Policy(keep_daily=2, keep_monthly=2))
    assert sorted(i for i, d in got.items() if d.keep) == ["d26", "d27", "f1", "f2", "oct"]
    assert not got["d25"].keep


def test_a_future_backup_within_the_tolerance_that_is_not_the_newest_kept_is_kept_by_the_skew_rule():
    # Two backups a little ahead of now (a clock slightly fast), in the same day: keep_daily=1 keeps the
    # newer one; the older one is kept by the clock-skew rule alone. Both count as real backups.
    near_new, near_old = NOW + timedelta(minutes=20), NOW + timedelta(minutes=10)
    items = [Item("near-new", near_new), Item("near-old", near_old), Item("past", NOW - timedelta(days=1))]
    got = decisions(items, Policy(keep_daily=1))
    assert got["near-new"].reasons == ("daily 2026-11-27", "newer than now (clock skew)")
    assert got["near-old"].reasons == ("newer than now (clock skew)",)
    assert got["near-old"].keep and got["near-old"].counted
    assert not got["past"].keep  # the near-future backups count: the 26th is not among the last 1 day


def test_a_future_backup_beyond_the_tolerance_that_is_not_the_newest():
    # The newest backup is in 9999; another far-future one is older than it but still beyond the
    # tolerance: both kept, neither counted, and keep_last=2 keeps the two newest real ones.
    items = [
        Item("9999", Y9999),
        Item("next-year", NOW + timedelta(days=365)),
        Item("r3", NOW - timedelta(hours=1)),
        Item("r2", NOW - timedelta(hours=2)),
        Item("r1", NOW - timedelta(hours=3)),
    ]
    got = decisions(items, Policy(keep_last=2))
    assert {i: d.keep for i, d in got.items()} == {"9999": True, "next-year": True, "r3": True, "r2": True, "r1": False}
    assert got["r3"].reasons == ("last 1",) and got["r2"].reasons == ("last 2",)
    assert [d.id for d in decide(items, Policy(keep_last=2), NOW)][:2] == ["9999", "next-year"]  # still newest first


def test_the_tolerance_boundary():
    at_edge, beyond = NOW + FUTURE_TOLERANCE, NOW + FUTURE_TOLERANCE + timedelta(seconds=1)
    got = decisions([Item("edge", at_edge), Item("beyond", beyond), Item("real", NOW - timedelta(days=1))], Policy(keep_last=1))
    assert got["edge"].counted and got["edge"].reasons == ("last 1", "newer than now (clock skew)")
    assert not got["beyond"].counted and got["beyond"].keep
    assert not got["real"].keep


def fake_backup(backend, volume: str, created: datetime, token: str) -> Manifest:
    backup_id = BackupId(volume, new_stamp(created, token))
    manifest = Manifest(backup_id, created, {}, "local", {}, "host", "id", "0", 10, 10, "0" * 64, 1)
    backend.save(backup_id.archive_key, [b"archive"])
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest


@pytest.fixture
def store(tmp_path):
    backend = LocalBackend(tmp_path / "store")
    now = datetime.now(UTC)
    real = [fake_backup(backend, "db", now - timedelta(days=d), f"000{d}") for d in (3, 2, 1)]
    # A manifest stored under an ordinary id that claims to be made in 9999.
    bogus_id = BackupId("db", new_stamp(now - timedelta(days=4), "ffff"))
    bogus = Manifest(bogus_id, Y9999, {}, "local", {}, "host", "id", "0", 10, 10, "0" * 64, 1)
    backend.save(bogus_id.archive_key, [b"archive"])
    backend.save(bogus_id.manifest_key, [bogus.to_json()])
    return backend, real, bogus


def test_prune_keeps_the_real_newest_and_warns_about_the_9999_one(store, caplog):
    backend, real, bogus = store
    with caplog.at_level(logging.WARNING, logger="backup.actions.prune"):
        results = run_prune([backend], Policy(keep_last=1), now=datetime.now(UTC))
    outcome = {str(r.manifest.backup_id): (r.decision.keep, r.removed) for r in results}
    assert outcome == {
        str(bogus.backup_id): (True, False),
        str(real[2].backup_id): (True, False),
        str(real[1].backup_id): (False, True),
        str(real[0].backup_id): (False, True),
    }
    assert str(bogus.backup_id) in caplog.text and "future" in caplog.text
    assert sorted(i.key for i in backend.list()) == sorted(
        [real[2].backup_id.manifest_key, real[2].backup_id.archive_key, bogus.backup_id.manifest_key, bogus.backup_id.archive_key]
    )


def test_prune_cli_dry_run_says_why(store, run, monkeypatch):
    monkeypatch.setenv("VOLSAFE_HOST_NAME", "host")  # the host these backups record: prune touches its backups
    backend, real, bogus = store
    code, out, err = run("prune", "--from", str(backend.root), "--keep-last", "1", "--dry-run", "--json")
    assert code == 0, err
    actions = {r["id"]: (r["action"], r["reason"]) for r in json.loads(out)}
    assert actions[str(real[2].backup_id)] == ("keep", "last 1")
    assert actions[str(bogus.backup_id)][0] == "keep" and "not counted" in actions[str(bogus.backup_id)][1]
    assert str(bogus.backup_id) in err
