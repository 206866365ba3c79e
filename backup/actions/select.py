"""Which volumes and mounts a backup takes: the Docker side of ``backup.selectors``."""

from __future__ import annotations

import fnmatch

from backup.actions.backup import MountSource
from backup.docker.host import DockerHost, docker_errors
from backup.errors import NotFoundError, UsageError
from backup.archive.naming import mount_storage_name
from backup.selectors import VolumeSelector, pick_volumes


def list_volumes(host: DockerHost) -> list[dict]:
    """Return the daemon's volume listing (``docker volume ls``: Name, Labels, Driver, …). Raises VolsafeError."""
    with docker_errors(host):
        return host.api.volumes().get("Volumes") or []


def resolve_volumes(host: DockerHost, selector: VolumeSelector) -> list[str]:
    """Return the sorted volume names ``selector`` picks; the daemon is asked once, and only if needed."""
    return pick_volumes(selector, list_volumes(host) if selector.needs_listing else [])


def mounts_from_inspect(inspect: dict) -> list[MountSource]:
    """Return the mounts of an inspected container, in mount-point order (pure).

    Named volumes keep their name as storage name; bind and tmpfs mounts get ``CONTAINER.DEST``.
    Other mount types (npipe, …) are skipped.
    """
    name = (inspect.get("Name") or "").lstrip("/")
    found = []
    for mount in inspect.get("Mounts") or []:
        kind, destination = mount.get("Type"), mount.get("Destination") or ""
        if kind == "volume":
            found.append(MountSource("volume", name, mount.get("Name") or "", destination, mount.get("Name") or ""))
        elif kind in ("bind", "tmpfs"):
            source = mount.get("Source") or "" if kind == "bind" else ""
            found.append(MountSource(kind, name, source, destination, mount_storage_name(name, destination)))
    # tmpfs mounts declared with --tmpfs (HostConfig.Tmpfs) do not show in Mounts; add them.
    for destination in (inspect.get("HostConfig") or {}).get("Tmpfs") or {}:
        if not any(m.destination == destination for m in found):
            found.append(MountSource("tmpfs", name, "", destination, mount_storage_name(name, destination)))
    return sorted(found, key=lambda m: m.destination)


def container_mounts(host: DockerHost, container: str) -> list[MountSource]:
    """Return every mount of ``container``. Raises NotFoundError, or UsageError if it has none."""
    try:
        with docker_errors(host):
            inspect = host.api.inspect_container(container)
    except NotFoundError:
        raise NotFoundError(f"no container named {container!r} on {host.url}") from None
    mounts = mounts_from_inspect(inspect)
    if not mounts:
        raise UsageError(f"container {container!r} has no volumes, bind mounts or tmpfs mounts")
    return mounts


def merge_mounts(volumes: list[str], mounts: list[MountSource], exclude: tuple[str, ...]) -> tuple[list[str], list[MountSource]]:
    """Return (volumes, mounts) to back up: ``--exclude NAME`` globs also drop mounts by storage name,
    and a volume that is also a container's mount is backed up once, as the mount (so it is recorded)."""
    kept = [m for m in mounts if not any(fnmatch.fnmatchcase(m.storage_name, pattern) for pattern in exclude)]
    unique = list({m.storage_name: m for m in kept}.values())  # two containers sharing a volume: once
    as_mount = {m.storage_name for m in unique if m.kind == "volume"}
    return [v for v in volumes if v not in as_mount], unique
