"""Which application containers to stop or pause for a backup, and in what order. Pure logic.

The Docker calls live in ``backup.quiesce.containers``; this module only reads the container list that
Docker returned, so every rule here is tested without a daemon.

Rules:
- a container takes part if it mounts the volume and is running (a paused container is frozen
  already, and a stopped one writes nothing);
- ``--stop`` / ``--pause`` (or a job's ``stop_containers`` / ``pause_containers``) quiesce them all,
  except those labelled ``volsafe.stop=false``; without either, only those labelled
  ``volsafe.stop=true`` are quiesced (stopped);
- dependents go down before what they depend on, and come back after it: Docker Compose's
  ``com.docker.compose.depends_on`` label, within one Compose project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from backup.errors import UsageError

STOP_LABEL = "volsafe.stop"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
DEPENDS_ON_LABEL = "com.docker.compose.depends_on"
MODES = ("none", "stop", "pause")


@dataclass(frozen=True)
class AppContainer:
    """A container that mounts the volume being backed up, as Docker's container list shows it."""

    id: str
    name: str
    state: str  # running, paused, exited, …
    writable: bool  # mounts the volume read-write
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def project(self) -> str | None:
        return self.labels.get(PROJECT_LABEL)

    @property
    def service(self) -> str | None:
        return self.labels.get(SERVICE_LABEL)

    @property
    def depends_on(self) -> frozenset[str]:
        """Return the Compose services this one depends on.

        Compose v2 writes ``db:service_started:true,cache:service_healthy:false``; older versions a
        plain comma-separated list of names. Only the service name matters here.
        """
        raw = self.labels.get(DEPENDS_ON_LABEL, "")
        return frozenset(part.split(":", 1)[0].strip() for part in raw.split(",") if part.split(":", 1)[0].strip())

    def opt(self) -> bool | None:
        """Return the ``volsafe.stop`` label as True/False, or None when absent or unrecognised."""
        value = self.labels.get(STOP_LABEL, "").strip().lower()
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(value)


def from_listing(entry: Mapping, volume: str | Iterable[str]) -> AppContainer | None:
    """Return the AppContainer of one item of Docker's container list, or None if it mounts none of
    ``volume`` (one name, or several: ``writable`` then means it writes any of them)."""
    wanted = {volume} if isinstance(volume, str) else set(volume)
    mounts = [m for m in entry.get("Mounts") or () if m.get("Type") == "volume" and m.get("Name") in wanted]
    if not mounts:
        return None
    names = entry.get("Names") or []
    name = names[0].lstrip("/") if names else entry["Id"][:12]
    return AppContainer(
        id=entry["Id"],
        name=name,
        state=str(entry.get("State") or ""),
        writable=any(m.get("RW", True) for m in mounts),
        labels=dict(entry.get("Labels") or {}),
    )


@dataclass(frozen=True)
class Plan:
    """What to do to the volume's containers: ``mode`` applied to ``order`` (already in quiesce order)."""

    mode: str  # "none", "stop" or "pause"
    order: tuple[AppContainer, ...] = ()
    left_writing: tuple[AppContainer, ...] = ()  # running with the volume read-write, not quiesced

    @property
    def resume_order(self) -> tuple[AppContainer, ...]:
        """Return the containers in the order to bring them back: the reverse of ``order``."""
        return tuple(reversed(self.order))


def plan_quiesce(containers: Iterable[AppContainer], mode: str) -> Plan:
    """Return the plan for ``mode`` ("none", "stop" or "pause") over the volume's containers.

    Raises UsageError for an unknown mode.
    """
    if mode not in MODES:
        raise UsageError(f"unknown quiesce mode {mode!r} (expected one of {', '.join(MODES)})")
    running = [c for c in containers if c.running]
    if mode == "none":
        chosen = [c for c in running if c.opt() is True]
        mode = "stop" if chosen else "none"
    else:
        chosen = [c for c in running if c.opt() is not False]
    left = tuple(sorted((c for c in running if c not in chosen and c.writable), key=lambda c: c.name))
    return Plan(mode=mode, order=tuple(quiesce_order(chosen)), left_writing=left)


def quiesce_order(containers: Iterable[AppContainer]) -> list[AppContainer]:
    """Return ``containers`` ordered so that each comes before every container it depends on.

    Dependencies are Compose services of the same project. Ties go by name, so the order is stable.
    A dependency cycle cannot be honoured; its members follow the rest, by name.
    """
    pending = sorted(containers, key=lambda c: c.name)
    by_service: dict[tuple[str | None, str | None], list[AppContainer]] = {}
    for c in pending:
        if c.service:
            by_service.setdefault((c.project, c.service), []).append(c)
    # dependencies[c] = the containers that c depends on (they must go down after c).
    dependencies = {c.id: [d for s in c.depends_on for d in by_service.get((c.project, s), []) if d.id != c.id] for c in pending}
    # A container can go down once nothing that depends on it is still up.
    dependents_left = {c.id: 0 for c in pending}
    for c in pending:
        for d in dependencies[c.id]:
            dependents_left[d.id] += 1
    ordered: list[AppContainer] = []
    while pending:
        ready = next((c for c in pending if dependents_left[c.id] == 0), None)
        if ready is None:  # a cycle: take the rest by name
            ordered.extend(pending)
            break
        pending.remove(ready)
        ordered.append(ready)
        for d in dependencies[ready.id]:
            dependents_left[d.id] -= 1
    return ordered
