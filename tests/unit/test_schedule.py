"""Schedule parsing: crontab lines (Sunday is 0), macros, @every, durations, time zones."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from backup.jobs.schedule import next_run, parse_duration, parse_schedule

UTC = timezone.utc


@pytest.mark.parametrize(
    "text, seconds",
    [("10s", 10), ("6h", 21600), ("1h30m", 5400), ("90", 90), (45, 45), ("1d", 86400), ("2w", 1209600), ("500ms", 0.5), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten seconds", "10x", "-5", "h", True, -1, "5s10"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# 2026-11-27 is a Friday.
FRIDAY = datetime(2026, 11, 27, 10, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("@hourly", datetime(2026, 11, 27, 11, 0, tzinfo=UTC)),
        ("@daily", datetime(2026, 11, 28, 0, 0, tzinfo=UTC)),
        ("@weekly", datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),  # Sunday, as in cron
        ("@monthly", datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2026, 11, 27, 10, 15, tzinfo=UTC)),
        ("30 2 * * 0", datetime(2026, 11, 29, 2, 30, tzinfo=UTC)),  # 0 = Sunday, not Monday
        ("30 2 * * 7", datetime(2026, 11, 29, 2, 30, tzinfo=UTC)),  # 7 = Sunday too
        ("30 2 * * 1-5", datetime(2026, 11, 30, 2, 30, tzinfo=UTC)),  # Monday to Friday
        ("0 12 * * sat", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        ("0 0 1 1 *", datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_cron_and_macros_in_utc(schedule, expected):
    assert next_run(parse_schedule(schedule, "UTC"), FRIDAY) == expected


def test_time_zone_applies_to_cron_fields():
    trigger = parse_schedule("0 3 * * *", "Europe/Berlin")
    assert next_run(trigger, FRIDAY) == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 03:00 CET = 02:00 UTC


def test_every_is_an_interval():
    trigger = parse_schedule("@every 10s")
    first = next_run(trigger, datetime.now(UTC))
    assert next_run(trigger, first, previous=first) - first == timedelta(seconds=10)


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("61 * * * *", "bad crontab schedule"),
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("@sometimes", "unknown schedule"),
        ("@every", "needs a duration"),
        ("@every 0s", "shorter than one second"),
        ("@every soon", "not a duration"),
        ("0 0 * * 8", "bad day of week"),
        ("0 0 * * fri-mon", "bad day-of-week range"),
    ],
)
def test_bad_schedules_say_why(schedule, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(schedule)


def test_unknown_time_zone():
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_schedule("@daily", "Mars/Olympus")
