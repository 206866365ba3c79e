"""restic inside a helper container, beside the volume.

The helper is volsafe's usual locked-down one (no network, every capability dropped but the few
its job needs, removed on every path). Into it go, read-only, the host's restic binary at
/volsafe/bin/restic and, for a dynamically linked build such as Debian's, the C library and the
loader it names (``ldd``); the repository directory at /volsafe/repo; and a persistent cache
volume (``volsafe-restic-cache``) at /volsafe/cache, so that a repeat backup reads only the
metadata of unchanged files and only the data of changed ones.

The backup helper mounts the volume read-only a second time at /volsafe/volumes/VOLUME and runs
``restic backup VOLUME`` from /volsafe/volumes: snapshots hold the volume as ``/VOLUME``, root
included (owner, mode, mtime), ``restic restore ID --target DIR`` gives DIR/VOLUME back by hand,
and restic itself finds the parent snapshot (same host, same path: the same volume).

Only a repository on a local path works this way (bind-mounted), with the daemon on this host. Any
other (``s3:``, ``sftp:``, ``rest:``…, or a remote daemon) takes the streamed mode of
``backup.restic.actions``: the helper keeps no network, restic runs on this host.
"""

from __future__ import annotations

import os
import re
import subprocess

from docker.types import Mount

from backup.docker.host import DockerHost, docker_errors
from backup.errors import NotFoundError, UsageError, VolsafeError
from backup.restic.repository import ResticRepository, restic_binary

BIN = "/volsafe/bin/restic"
REPO = "/volsafe/repo"
CACHE = "/volsafe/cache"
VOLUMES = "/volsafe/volumes"  # the backup helper's volume is at VOLUMES/NAME
CACHE_VOLUME = "volsafe-restic-cache"  # $VOLSAFE_RESTIC_CACHE_VOLUME names another
CACHE_LABEL = "io.volsafe.restic-cache"


def _libraries(binary: str) -> list[str]:
    """Return the shared libraries (and loader) ``binary`` needs, as absolute paths; none if static."""
    try:
        done = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    except OSError:
        return []
    if done.returncode != 0:  # "not a dynamic executable"
        return []
    found = []
    for line in done.stdout.splitlines():
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            found.append(match.group(1))
    return found


def require_local(host: DockerHost, repo: ResticRepository) -> str:
    """Return the repository's directory. Raises VolsafeError where the helper cannot reach it."""
    path = repo.local_path
    if path is None:
        raise VolsafeError(
            f"{repo.url}: this snapshot holds the volume's files (made by restic beside them, from a local repository "
            f"directory), which volsafe restores only from a local repository; restore it by hand with 'restic restore', "
            f"or copy the repository to a directory"
        )
    if host.remote:
        raise VolsafeError(
            f"{repo.url}: this snapshot holds the volume's files (made by restic beside them), which volsafe restores "
            f"only with the Docker daemon on this host, not {host.url}"
        )
    if not os.path.isdir(path):
        raise NotFoundError(
            f"{repo.url}: there is no restic repository there; create one with 'volsafe repo init {repo.url}' (or 'restic init')"
        )
    return path


def ensure_cache(host: DockerHost) -> str:
    """Return the name of the persistent restic cache volume, created on first use."""
    name = os.environ.get("VOLSAFE_RESTIC_CACHE_VOLUME") or CACHE_VOLUME
    if not host.volume_exists(name):
        with docker_errors(host):
            host.api.create_volume(name, labels={CACHE_LABEL: "true"})
    return name


def restic_mounts(host: DockerHost, repo: ResticRepository) -> tuple[Mount, ...]:
    """Return the mounts that put restic, its libraries, the repository and the cache into a helper."""
    path = require_local(host, repo)
    binary = restic_binary()
    mounts = [Mount(BIN, binary, type="bind", read_only=True)]
    for library in _libraries(binary):
        mounts.append(Mount(library, os.path.realpath(library), type="bind", read_only=True))
    mounts.append(Mount(REPO, path, type="bind", read_only=False))
    mounts.append(Mount(CACHE, ensure_cache(host), type="volume", read_only=False))
    return tuple(mounts)


def restic_command(*args: str) -> list[str]:
    """Return the argv of restic on the helper's repository and cache."""
    return [BIN, "-r", REPO, "--cache-dir", CACHE, *args]


def check_volume_name(volume: str) -> str:
    if volume.startswith("/"):
        raise UsageError(f"{volume}: restic targets back up volumes, not host directories")
    return volume
