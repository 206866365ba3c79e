"""Retention as a pure function: restic's semantics, checked with tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from backup.jobs.retention import Item, Policy, decide

UTC = timezone.utc
NOW = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def kept(times: list[str], policy: Policy, tz=None) -> list[str]:
    items = [Item(t, at(t)) for t in times]
    return sorted(d.id for d in decide(items, policy, NOW, tz) if d.keep)


CASES = [
    # (name, backups, policy, kept)
    ("keep_last 2 of 4", ["2026-11-01 00:00", "2026-11-02 00:00", "2026-11-03 00:00", "2026-11-04 00:00"],
     Policy(keep_last=2), ["2026-11-03 00:00", "2026-11-04 00:00"]),
    ("keep_last larger than the count keeps all", ["2026-11-01 00:00", "2026-11-02 00:00"],
     Policy(keep_last=5), ["2026-11-01 00:00", "2026-11-02 00:00"]),
    ("daily keeps the newest of each day", ["2026-11-26 01:00", "2026-11-26 23:59", "2026-11-27 00:00", "2026-11-27 12:00"],
     Policy(keep_daily=2), ["2026-11-26 23:59", "2026-11-27 12:00"]),
    ("day boundary: 23:59 and 00:00 are different days", ["2026-11-26 23:59", "2026-11-27 00:00"],
     Policy(keep_daily=1), ["2026-11-27 00:00"]),
    ("gaps do not use up the count (restic)", ["2026-10-01 10:00", "2026-11-20 10:00", "2026-11-27 10:00"],
     Policy(keep_daily=3), ["2026-10-01 10:00", "2026-11-20 10:00", "2026-11-27 10:00"]),
    ("hourly boundary", ["2026-11-27 10:00", "2026-11-27 10:59", "2026-11-27 11:00", "2026-11-27 11:30"],
     Policy(keep_hourly=2), ["2026-11-27 10:59", "2026-11-27 11:30"]),
    # (Not 22/23/29 Nov: the 29th is after NOW, and a backup that far in the future is not counted.)
    ("ISO weeks start on Monday", ["2026-11-15 12:00", "2026-11-16 00:30", "2026-11-22 23:00"],  # Sun, Mon, Sun
     Policy(keep_weekly=2), ["2026-11-15 12:00", "2026-11-22 23:00"]),
    ("ISO week across a year boundary", ["2025-12-28 12:00", "2025-12-31 12:00", "2026-01-04 12:00"],  # 2025-W52, 2026-W01 x2
     Policy(keep_weekly=2), ["2025-12-28 12:00", "2026-01-04 12:00"]),
    ("monthly", ["2026-09-30 23:00", "2026-10-01 00:00", "2026-10-31 23:00", "2026-11-01 01:00"],
     Policy(keep_monthly=2), ["2026-10-31 23:00", "2026-11-01 01:00"]),
    ("yearly", ["2024-06-01 00:00", "2025-01-01 00:00", "2025-12-31 23:00", "2026-01-01 00:00"],
     Policy(keep_yearly=2), ["2025-12-31 23:00", "2026-01-01 00:00"]),
    ("one backup per period: daily keeps exactly N", [f"2026-11-{d:02d} 03:00" for d in range(1, 11)],
     Policy(keep_daily=4), [f"2026-11-{d:02d} 03:00" for d in range(7, 11)]),
    ("rules are a union", ["2026-09-15 00:00", "2026-10-15 00:00", "2026-11-25 00:00", "2026-11-26 00:00", "2026-11-27 00:00"],
     Policy(keep_last=1, keep_monthly=3), ["2026-09-15 00:00", "2026-10-15 00:00", "2026-11-27 00:00"]),
    ("every rule at zero keeps everything", ["2026-11-01 00:00", "2026-11-02 00:00"],
     Policy(), ["2026-11-01 00:00", "2026-11-02 00:00"]),
    ("no backups", [], Policy(keep_last=3), []),
    ("the newest is kept by any rule", ["2026-01-01 00:00", "2026-11-27 00:00"],
     Policy(keep_yearly=1), ["2026-11-27 00:00"]),
]


@pytest.mark.parametrize("name, times, policy, expected", CASES, ids=[c[0] for c in CASES])
def test_policy_table(name, times, policy, expected):
    assert kept(times, policy) == sorted(expected)


@pytest.mark.parametrize(
    "zone, expected",
    [
        # Days split differently by zone: Tokyo (+9) sees one day, New York (-5) sees the 26th end at 05:00 UTC.
        ("UTC", ["2026-11-26 22:30", "2026-11-27 06:00"]),
        ("Asia/Tokyo", ["2026-11-27 06:00"]),
        ("America/New_York", ["2026-11-27 01:00", "2026-11-27 06:00"]),
    ],
)
def test_periods_follow_the_time_zone(zone, expected):
    times = ["2026-11-26 22:30", "2026-11-27 01:00", "2026-11-27 06:00"]
    assert kept(times, Policy(keep_daily=2), ZoneInfo(zone)) == expected


def test_dst_change_day_is_one_day():
    # Europe/Berlin leaves summer time on 2026-10-25: 00:30 and 23:30 local are 24h+1 apart, one day.
    tz = ZoneInfo("Europe/Berlin")
    times = ["2026-10-24 22:30", "2026-10-25 22:30"]  # UTC: 00:30 CEST and 23:30 CET on the 25th
    assert kept(times, Policy(keep_daily=1), tz) == ["2026-10-25 22:30"]


def test_reasons_name_each_rule_and_removed_backups_say_why():
    items = [Item("a", at("2026-11-25 10:00")), Item("b", at("2026-11-26 10:00")), Item("c", at("2026-11-26 11:00"))]
    decisions = {d.id: d for d in decide(items, Policy(keep_last=1, keep_daily=2), NOW)}
    assert decisions["c"].reasons == ("last 1", "daily 2026-11-26")
    assert decisions["a"].reasons == ("daily 2026-11-25",)
    assert not decisions["b"].keep and decisions["b"].reason == "no keep rule matched"


def test_decisions_come_newest_first_and_accept_pairs():
    decisions = decide([("x", at("2026-11-01 00:00")), ("y", at("2026-11-02 00:00"))], Policy(keep_last=1), NOW)
    assert [(d.id, d.keep) for d in decisions] == [("y", True), ("x", False)]


def test_backups_from_the_future_are_kept():
    future = NOW + timedelta(days=1)
    decisions = decide([Item("f", future), Item("p", at("2026-11-27 00:00")), Item("q", at("2026-11-26 00:00"))], Policy(keep_last=1), NOW)
    # f is kept but not counted (a day ahead is beyond the clock-skew tolerance): p is still "last 1".
    assert {d.id: d.keep for d in decisions} == {"f": True, "p": True, "q": False}


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        decide([Item("n", datetime(2026, 1, 1))], Policy(keep_last=1), NOW)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3"])
def test_policy_counts_must_be_whole_numbers(bad):
    with pytest.raises(ValueError):
        Policy(keep_last=bad)
