"""``volsafe volumes``: ask the daemon and each backend once, then assemble the overview."""

from __future__ import annotations

from datetime import datetime, timezone

from backup.archive.catalog import newest_of_host
from backup.docker.host import DockerHost, docker_errors
from backup.actions.overview import VolumeRow, assemble
from storage_backends import Backend


def run_volumes(host: DockerHost, backends: list[Backend], *, max_age: float, this_host: str) -> list[VolumeRow]:
    """Return the overview rows: one disk-usage call, one container listing, one listing per backend
    (and the manifests needed to tell this host's newest backups from other hosts').

    A volume's newest backup is the newest made on ``this_host`` (or recording no host): another
    host's backup of a volume with the same name in a shared store says nothing about this one.
    Sizes come from the daemon's disk-usage API (``docker system df -v``), so no helper is started.
    Raises VolsafeError if the daemon or a backend cannot be read.
    """
    with docker_errors(host):
        df = host.api.df()
        containers = host.api.containers(all=True)
    names = [entry["Name"] for entry in df.get("Volumes") or []]
    newest = {backend.url: newest_of_host(backend, names, this_host) for backend in backends}
    return assemble(df.get("Volumes") or [], containers, newest, now=datetime.now(timezone.utc), max_age=max_age)
