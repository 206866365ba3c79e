"""Tar streams to and from a path inside a *running application container*, through ``docker exec``.

tmpfs data lives only in the running container's memory: a helper cannot mount it and Docker's
archive endpoint does not copy from tmpfs mounts (as documented for ``docker cp``). So the
container's own ``tar`` (busybox or GNU) writes the tree to stdout, and volsafe reads the exec
stream, keeping stdout frames as the tar and stderr for the error message. The container must have
``tar`` and ``sh``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from backup.docker.host import DockerHost, docker_errors
from backup.errors import VolsafeError
from backup.docker.helper import HelperSession, _raw_socket, read_frames

_STDERR_LIMIT = 16 * 1024
# ``tar -c`` with a missing tar gives 127 from sh; name it instead of a bare exit code.
CREATE_SCRIPT = 'command -v tar >/dev/null 2>&1 || { echo "no tar in this container" >&2; exit 127; }; exec tar -c -f - -C "$1" .'


class ContainerSession(HelperSession):
    """A running application container, driven like a helper session (exec, put_archive)."""


@contextlib.contextmanager
def container_tar(host: DockerHost, container: str, path: str) -> Iterator[Iterator[bytes]]:
    """Yield an iterator over a tar of ``path`` in the running ``container`` (entries ``./…``).

    Iterating raises VolsafeError if the container's tar fails (exit code and its last stderr
    line), so a partial stream is never stored as a whole one. The exec stream is closed on exit.
    """
    api = host.api
    with docker_errors(host):
        exec_id = api.exec_create(container, ["sh", "-c", CREATE_SCRIPT, "sh", path], stdout=True, stderr=True)["Id"]
        sock = _raw_socket(api.exec_start(exec_id, socket=True))
    session = ContainerSession(host, container)

    def chunks() -> Iterator[bytes]:
        errors = bytearray()
        try:
            for stream, payload in read_frames(sock):
                if stream == 2:
                    errors += payload
                    del errors[:-_STDERR_LIMIT]
                else:
                    yield payload
        except OSError as exc:
            raise VolsafeError(f"lost the exec stream from container {container}: {exc}") from None
        code = session._exit_code(exec_id)
        if code != 0:
            lines = [line for line in errors.decode(errors="replace").splitlines() if line.strip()]
            raise VolsafeError(f"tar of {path} in container {container} exited {code}: {lines[-1] if lines else 'no message'}")

    try:
        yield chunks()
    finally:
        HelperSession._close(sock)
