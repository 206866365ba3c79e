"""Pure schedule parsing: crontab lines, ``@daily``-style macros, ``@every DURATION``, durations.

Each schedule becomes an APScheduler 3.x trigger; nothing here starts a scheduler.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# crontab counts weekdays from Sunday (0 or 7); APScheduler 3 counts from Monday, so numbers are
# translated to names, which both agree on.
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def parse_duration(value: str | int | float) -> float:
    """Return the seconds in ``value``: a number of seconds, or text such as ``10s``, ``6h``, ``1h30m``.

    Raises ValueError for anything else, or a negative duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 6h, 1d, 1h30m)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def timezone_of(name: str | None) -> tzinfo | None:
    """Return the IANA time zone ``name`` (None stays None). Raises ValueError for an unknown zone."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin' or 'UTC')") from None


def _crontab_weekdays(field: str) -> str:
    """Return a crontab day-of-week field with numbers turned into day names. Raises ValueError."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for token in field.lower().split(","):
        body, _, step_text = token.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"bad step in day-of-week {token!r}")
        if body == "*":
            low, high = 0, 6
        else:
            low_text, _, high_text = body.partition("-")
            low = _day_number(low_text)
            high = _day_number(high_text) if high_text else (6 if step else low)
            if high == 0 and high_text:  # "5-7" and "5-0": up to Sunday
                high = 7
        if low > high:
            raise ValueError(f"bad day-of-week range {token!r}")
        days.update(d % 7 for d in range(low, high + 1, step or 1))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def _day_number(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text[:3] in _DAY_NAMES and len(text) == 3:
        return _DAY_NAMES.index(text)
    raise ValueError(f"bad day of week {text!r} (use 0-7 or sun-sat)")


def parse_schedule(text: str, timezone: str | None = None, jitter: float | None = None) -> BaseTrigger:
    """Return the APScheduler trigger for ``text``.

    ``text`` is a 5-field crontab line (minute hour day-of-month month day-of-week), one of
    ``@hourly @daily @weekly @monthly @yearly``, or ``@every DURATION``. Cron fields are read in
    ``timezone`` (default: the local zone). Unlike classic cron, a line that restricts both the
    day of month and the day of week fires only when both match. Raises ValueError with a reason.
    """
    # APScheduler (and asyncio under it) loads when a schedule is read, not with this module:
    # durations and time zones serve commands that never schedule anything.
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    tz = timezone_of(timezone)
    jitter_seconds = int(round(jitter)) if jitter else None
    spec = " ".join(str(text).split())
    if spec.startswith("@every"):
        rest = spec[len("@every"):].strip()
        if not rest:
            raise ValueError("'@every' needs a duration, e.g. '@every 6h'")
        seconds = parse_duration(rest)
        if seconds < 1:
            raise ValueError(f"'@every {rest}' is shorter than one second")
        return IntervalTrigger(seconds=seconds, timezone=tz, jitter=jitter_seconds)
    if spec.startswith("@"):
        if spec not in MACROS:
            raise ValueError(f"unknown schedule {spec!r} (use a crontab line, {', '.join(MACROS)} or '@every DURATION')")
        spec = MACROS[spec]
    fields = spec.split(" ")
    if len(fields) != 5:
        raise ValueError(f"a crontab schedule has 5 fields (minute hour day month weekday), not {len(fields)}: {text!r}")
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_weekdays(weekday),
            timezone=tz, jitter=jitter_seconds,
        )
    except ValueError as exc:
        raise ValueError(f"bad crontab schedule {text!r}: {exc}") from None


def next_run(trigger: BaseTrigger, now: datetime, previous: datetime | None = None) -> datetime | None:
    """Return the trigger's next fire time after ``now`` (None if it never fires again)."""
    return trigger.get_next_fire_time(previous, now)
