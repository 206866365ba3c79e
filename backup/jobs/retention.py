"""Retention: which backups to keep, as a pure function of (backups, policy, now, time zone).

The semantics are restic's ``forget``: ``keep_last N`` keeps the N newest backups; every other rule
(``keep_hourly`` … ``keep_yearly``) groups the backups into periods (hours, days, ISO weeks, months,
years, in the policy's time zone), and keeps the newest backup of each of the N most recent periods
that *have* a backup (so gaps do not use up the count). A backup is kept if any rule keeps it. The
newest backup is never removed, and a policy whose rules are all zero removes nothing.

Times come from manifests, which whoever can write to a store can set. A backup created more than
FUTURE_TOLERANCE after ``now`` (a year-9999 ``created``, or a host whose clock is far ahead) is kept
but *not counted*: it takes no place in any rule, so it cannot push real backups out. One created
after ``now`` but within the tolerance (clocks a little apart) counts as usual and is always kept.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable, Iterable, Sequence, Union

from backup.archive.manifest import Manifest


@dataclass(frozen=True)
class Policy:
    """How many backups (or periods) each rule keeps; 0 means the rule is off."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{f.name} must be a whole number >= 0, not {value!r}")

    @property
    def empty(self) -> bool:
        """Return True when every rule is zero (such a policy keeps everything)."""
        return not any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        """Return e.g. ``keep_last=2 keep_daily=7``, or ``none``."""
        rules = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name)]
        return " ".join(rules) or "none"


RULE_NAMES = tuple(f.name for f in fields(Policy))

# How far ahead of ``now`` a backup's time may be and still count towards the keep rules.
FUTURE_TOLERANCE = timedelta(hours=1)


@dataclass(frozen=True)
class Item:
    """One backup as retention sees it: an id (any string) and its aware creation time."""

    id: str
    created: datetime


@dataclass(frozen=True)
class Decision:
    """Keep or remove one backup, with every reason (e.g. ``last 1``, ``daily 2026-11-27``)."""

    id: str
    created: datetime
    keep: bool
    reasons: tuple[str, ...]
    # False for a backup created beyond now + FUTURE_TOLERANCE: kept, but left out of every rule.
    counted: bool = True

    @property
    def reason(self) -> str:
        return ", ".join(self.reasons)


# The period each rule groups by, as a label in the policy's time zone.
_PERIODS: dict[str, tuple[str, Callable[[datetime], str]]] = {
    "keep_hourly": ("hourly", lambda t: t.strftime("%Y-%m-%d %H:00")),
    "keep_daily": ("daily", lambda t: t.strftime("%Y-%m-%d")),
    "keep_weekly": ("weekly", lambda t: "%04d-W%02d" % t.isocalendar()[:2]),
    "keep_monthly": ("monthly", lambda t: t.strftime("%Y-%m")),
    "keep_yearly": ("yearly", lambda t: t.strftime("%Y")),
}


def _item(backup: Union[Item, Manifest, tuple]) -> Item:
    if isinstance(backup, Item):
        return backup
    if isinstance(backup, Manifest):
        return Item(str(backup.backup_id), backup.created)
    backup_id, created = backup
    return Item(str(backup_id), created)


def decide(
    backups: Iterable[Union[Item, Manifest, tuple]], policy: Policy, now: datetime, tz: tzinfo | None = None
) -> list[Decision]:
    """Return one Decision per backup, newest first.

    ``backups`` are Items, Manifests or ``(id, created)`` pairs with aware datetimes, all of one
    volume. Periods are computed in ``tz`` (default UTC). Backups created after ``now`` (a clock
    that went backwards) are always kept; those beyond ``now + FUTURE_TOLERANCE`` are not counted
    by any rule (``Decision.counted`` is False). Raises ValueError for a naive datetime.
    """
    tz = tz or timezone.utc
    items = [_item(b) for b in backups]
    if any(i.created.tzinfo is None for i in items):
        raise ValueError("backup times must be timezone-aware")
    items.sort(key=lambda i: (i.created, i.id), reverse=True)
    reasons: dict[str, list[str]] = {i.id: [] for i in items}
    horizon = now + FUTURE_TOLERANCE
    future = {i.id for i in items if i.created > horizon}
    counted = [i for i in items if i.id not in future]

    if policy.empty:
        for i in items:
            reasons[i.id].append("no keep rule set")
    for n, i in enumerate(counted[: policy.keep_last], start=1):
        reasons[i.id].append(f"last {n}")
    for rule, (word, label_of) in _PERIODS.items():
        _keep_periods(counted, getattr(policy, rule), word, label_of, tz, reasons)
    for i in items:
        if i.id in future:
            reasons[i.id].append("created in the future (beyond now + clock skew): kept, not counted")
        elif i.created > now:
            reasons[i.id].append("newer than now (clock skew)")
    if counted and not reasons[counted[0].id]:
        reasons[counted[0].id].append("newest")  # unreachable with any rule > 0; a safety net
    return [
        Decision(i.id, i.created, bool(reasons[i.id]), tuple(reasons[i.id]) or ("no keep rule matched",), i.id not in future)
        for i in items
    ]


def _keep_periods(
    items: Sequence[Item], count: int, word: str, label_of: Callable[[datetime], str], tz: tzinfo, reasons: dict
) -> None:
    """Mark the newest backup of each of the ``count`` newest periods that hold a backup."""
    seen: set[str] = set()
    for i in items:  # newest first, so the first backup met in a period is its newest
        if len(seen) >= count:
            return
        label = label_of(i.created.astimezone(tz))
        if label not in seen:
            seen.add(label)
            reasons[i.id].append(f"{word} {label}")
