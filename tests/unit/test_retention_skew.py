"""Retention's documented clock-skew rule: a backup created after ``now`` is always kept.

The existing test only has a future backup that is also the newest (kept by ``keep_last`` anyway).
Here the future backup is *not* the newest kept, and no period rule would keep it, so only the
skew rule can. The times are minutes to hours ahead (a clock that went backwards), not the
far-future stamps another rule may treat differently.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from backup.jobs.retention import Item, Policy, decide

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
SKEW = "newer than now (clock skew)"


def _decisions(items, policy):
    return {d.id: d for d in decide(items, policy, NOW)}


def test_clock_skew_rule_keeps_a_future_backup_that_is_not_the_newest_kept():
    items = [
        Item("future-newest", NOW + timedelta(minutes=50)),  # within the skew tolerance (1 h): counted
        Item("future-older", NOW + timedelta(minutes=30)),  # same day as "future-newest": daily skips it
        Item("past-1", NOW - timedelta(hours=1)),
        Item("past-2", NOW - timedelta(days=1)),
        Item("past-3", NOW - timedelta(days=2)),
    ]
    decisions = _decisions(items, Policy(keep_last=1, keep_daily=2))
    assert decisions["future-newest"].keep and "last 1" in decisions["future-newest"].reasons
    older = decisions["future-older"]
    assert older.keep and older.reasons == (SKEW,)
    assert decisions["past-2"].keep and not decisions["past-1"].keep and not decisions["past-3"].keep
    assert SKEW not in decisions["past-1"].reasons


def test_clock_skew_rule_with_only_keep_last():
    items = [Item("a", NOW + timedelta(minutes=1)), Item("b", NOW + timedelta(seconds=1)), Item("c", NOW - timedelta(days=3))]
    decisions = _decisions(items, Policy(keep_last=1))
    assert [d for d in decisions if decisions[d].keep] == ["a", "b"]
    assert decisions["b"].reasons == (SKEW,) and not decisions["c"].keep


def test_a_backup_created_exactly_now_is_not_from_the_future():
    items = [Item("newer", NOW + timedelta(minutes=5)), Item("now", NOW), Item("old", NOW - timedelta(hours=1))]
    decisions = _decisions(items, Policy(keep_last=1))
    assert not decisions["now"].keep and decisions["now"].reasons == ("no keep rule matched",)
    assert decisions["newer"].reasons == ("last 1", SKEW)


def test_clock_skew_is_judged_on_the_instant_not_the_zone():
    # 13:30+02:00 is 11:30 UTC: half an hour before NOW, so not from the future.
    plus_two = timezone(timedelta(hours=2))
    items = [Item("newest", NOW - timedelta(minutes=10)), Item("zoned", datetime(2026, 11, 27, 13, 30, tzinfo=plus_two))]
    decisions = _decisions(items, Policy(keep_last=1))
    assert not decisions["zoned"].keep
