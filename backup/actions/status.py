"""``volsafe status``: the fleet at a glance, one row per host and volume from a shared store.

Reads only manifests (never an archive), so it runs as a cron or monitoring check against a bucket
that many hosts write to. The assembly (``fleet_rows``) is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from backup.archive.catalog import list_backups
from backup.archive.manifest import Manifest, format_time
from storage_backends import Backend


@dataclass
class FleetRow:
    """One host's backups of one volume, across the backends read."""

    host: str  # "" when the backups record no host
    volume: str
    newest: Manifest
    age_seconds: float
    count: int  # distinct backups (one stored on two backends counts once)
    stored_bytes: int  # what they take up, every stored copy counted
    stale: bool
    backends: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "source_host": self.host,
            "volume": self.volume,
            "newest_id": str(self.newest.backup_id),
            "newest_created": format_time(self.newest.created),
            "age_seconds": round(self.age_seconds),
            "count": self.count,
            "stored_bytes": self.stored_bytes,
            "stale": self.stale,
            "backends": list(self.backends),
        }


def fleet_rows(found: Iterable[tuple[Manifest, str]], *, now: datetime, max_age: float) -> list[FleetRow]:
    """Return one row per (host, volume) of ``found`` ((manifest, backend url) pairs), sorted by
    host then volume. A row is stale when its newest backup is older than ``max_age`` seconds."""
    groups: dict[tuple[str, str], list[tuple[Manifest, str]]] = {}
    for manifest, url in found:
        groups.setdefault((manifest.source_hostname, manifest.volume), []).append((manifest, url))
    rows = []
    for (host, volume), items in sorted(groups.items()):
        newest = max((m for m, _ in items), key=lambda m: (m.created, m.backup_id.stamp))
        age = (now - newest.created).total_seconds()
        rows.append(
            FleetRow(
                host=host,
                volume=volume,
                newest=newest,
                age_seconds=age,
                count=len({m.backup_id for m, _ in items}),
                stored_bytes=sum(m.stored_size for m, _ in items),
                stale=age > max_age,
                backends=sorted({url for _, url in items}),
            )
        )
    return rows


def run_status(backends: list[Backend], *, now: datetime, max_age: float) -> list[FleetRow]:
    """Return the fleet's rows from every backup on ``backends``. Raises BackendError if one cannot be listed."""
    return fleet_rows(((m, b.url) for b in backends for m in list_backups(b)), now=now, max_age=max_age)
