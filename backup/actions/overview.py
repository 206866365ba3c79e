"""``volsafe volumes``: the overview of every volume and its newest backups, assembled without I/O.

The Docker and backend answers come in as plain data (one disk-usage answer, one container listing,
one newest-backup map per backend), so the assembly is unit-tested without a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping

from backup.archive.manifest import format_time
from backup.archive.naming import BackupId, stamp_time
from backup.selectors import COMPOSE_PROJECT

HELPER_LABEL = "io.volsafe.helper"


@dataclass(frozen=True)
class NewestBackup:
    """The newest backup of a volume on one backend (None fields: there is none)."""

    backend: str
    backup_id: BackupId | None
    created: datetime | None
    age_seconds: float | None


@dataclass
class VolumeRow:
    """One line of the overview."""

    name: str
    driver: str
    size: int | None  # bytes, None when the daemon did not measure it
    project: str | None
    labels: dict[str, str]
    containers: list[tuple[str, bool]] = field(default_factory=list)  # (name, running)
    newest: list[NewestBackup] = field(default_factory=list)  # one per backend, in backend order
    stale: bool = False  # no backup anywhere, or none newer than the threshold

    @property
    def newest_overall(self) -> NewestBackup | None:
        found = [n for n in self.newest if n.backup_id is not None]
        return max(found, key=lambda n: n.backup_id.stamp) if found else None  # type: ignore[union-attr]  # found has backup ids

    def to_json(self) -> dict:
        """Return the row as ``volumes --json`` prints it."""
        best = self.newest_overall
        return {
            "volume": self.name,
            "driver": self.driver,
            "size": self.size,
            "project": self.project,
            "labels": dict(self.labels),
            "containers": [{"name": name, "running": running} for name, running in self.containers],
            "backups": [
                {
                    "backend": n.backend,
                    "newest_id": str(n.backup_id) if n.backup_id else None,
                    "newest_created": format_time(n.created) if n.created else None,
                    "age_seconds": round(n.age_seconds) if n.age_seconds is not None else None,
                }
                for n in self.newest
            ],
            "newest_created": format_time(best.created) if best and best.created else None,
            "age_seconds": round(best.age_seconds) if best and best.age_seconds is not None else None,
            "stale": self.stale,
        }


def _size(entry: Mapping) -> int | None:
    size = (entry.get("UsageData") or {}).get("Size")
    return size if isinstance(size, int) and size >= 0 else None  # -1: not measured (non-local driver)


def _users(containers: Iterable[Mapping]) -> dict[str, list[tuple[str, bool]]]:
    """Return volume name -> [(container, running)] from a ``containers(all=True)`` listing, helpers left out."""
    users: dict[str, list[tuple[str, bool]]] = {}
    for entry in containers:
        if (entry.get("Labels") or {}).get(HELPER_LABEL) == "true":
            continue
        name = ((entry.get("Names") or ["?"])[0]).lstrip("/")
        running = entry.get("State") == "running"
        for mount in entry.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Name"):
                users.setdefault(mount["Name"], []).append((name, running))
    return users


def assemble(
    df_volumes: Iterable[Mapping],
    containers: Iterable[Mapping],
    newest: Mapping[str, Mapping[str, BackupId]],
    *,
    now: datetime,
    max_age: float,
) -> list[VolumeRow]:
    """Return one row per volume, sorted by name.

    ``df_volumes`` is the disk-usage answer's ``Volumes``; ``newest`` maps each backend's url to its
    volume -> newest backup id. A volume is stale when no backend has a backup of it newer than
    ``max_age`` seconds.
    """
    users = _users(containers)
    rows = []
    for entry in df_volumes:
        name = entry["Name"]
        labels = entry.get("Labels") or {}
        row = VolumeRow(name, entry.get("Driver") or "local", _size(entry), labels.get(COMPOSE_PROJECT), dict(labels))
        row.containers = sorted(users.get(name, []))
        for backend, ids in newest.items():
            backup_id = ids.get(name)
            created = stamp_time(backup_id.stamp) if backup_id else None
            age = (now - created).total_seconds() if created else None
            row.newest.append(NewestBackup(backend, backup_id, created, age))
        ages = [n.age_seconds for n in row.newest if n.age_seconds is not None]
        row.stale = not ages or min(ages) > max_age
        rows.append(row)
    return sorted(rows, key=lambda r: r.name)


def human_age(seconds: float | None) -> str:
    """Return an age as people read it: ``45s``, ``12m``, ``5h``, ``3d``; ``never`` for None."""
    if seconds is None:
        return "never"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
