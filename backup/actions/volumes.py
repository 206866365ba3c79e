"""``volsafe volumes``: ask the daemon and each backend once, then assemble the overview."""

from __future__ import annotations

from datetime import datetime, timezone

from backup.archive.catalog import newest_by_volume
from backup.docker.host import DockerHost, docker_errors
from backup.actions.overview import VolumeRow, assemble
from backup.restic import is_repository
from storage_backends import Backend


def run_volumes(host: DockerHost, backends: list[Backend], *, max_age: float) -> list[VolumeRow]:
    """Return the overview rows: one disk-usage call, one container listing, one listing per backend.

    Sizes come from the daemon's disk-usage API (``docker system df -v``), so no helper is started.
    Raises VolsafeError if the daemon or a backend cannot be read.
    """
    with docker_errors(host):
        df = host.api.df()
        containers = host.api.containers(all=True)
    newest = {backend.url: backend.newest_by_volume() if is_repository(backend) else newest_by_volume(backend) for backend in backends}
    return assemble(df.get("Volumes") or [], containers, newest, now=datetime.now(timezone.utc), max_age=max_age)
