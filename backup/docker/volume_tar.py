"""The tar stream of a volume (or bind directory), read-only, by the fastest path that works.

Two paths give the same tar entries in the same order, so digests and entry counts do not depend
on which one was taken:

* **FIFO** (a daemon on this machine, a helper image with GNU tar): the helper runs
  ``gtar --sort=name`` into a FIFO that volsafe created and bind-mounted into it. No byte passes
  through the Docker daemon (``backup.docker.fifo``), which on the archive endpoint spends about
  4 CPU-seconds per 600 MB in ``docker-tar`` and dockerd.
* **archive endpoint**: Docker's ``GET /containers/ID/archive`` on a created, never started helper.
  Works with any daemon, local or remote, and any helper image.

GNU tar's ``--sort=name`` walks each directory in byte order of the names, depth first, as Go's
``filepath.Walk`` in Docker's archive code does; both store the first name of a set of hard links
(in that order) with the data and the others as links, and both skip sockets.

When the FIFO path cannot start (volsafe runs in a container that does not share /tmp with the
daemon, a daemon in a VM, an SELinux denial), ``volume_tar`` falls back to the archive endpoint
before any byte is used, and keeps using it for that daemon and image for the rest of the process.
``VOLSAFE_DATA_PATH=api`` forces the archive endpoint.

The two streams differ only in padding after the end marker (GNU tar fills its last 10 KiB
record), so the manifest's ``tar_size`` may differ by up to that much between the paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator

from backup.streams.concurrency import raise_if_cancelled
from backup.docker.host import API_TIMEOUT, DockerHost, docker_errors
from backup.errors import NotFoundError, VolsafeError
from backup.docker.helper import _create, _remove, archive_stream, created_helper
from backup.docker.fifo import (
    FIFO_NAME,
    IO_DIR,
    FastPathUnavailable,
    FifoDir,
    FifoReader,
    fifo_dir,
    fifo_possible,
    mark_unavailable,
)

log = logging.getLogger(__name__)

GNU_TAR_LABEL = "io.volsafe.gnu-tar"  # on a helper image: the path of GNU tar (>= 1.28) in it
FIRST_BYTE_TIMEOUT = 30.0  # seconds: a helper that has not written by then did not reach our FIFO
STALL_TIMEOUT = float(API_TIMEOUT)  # seconds without a byte mid-stream: as the archive endpoint's socket
_POLL_MS = 200  # between checks for a cancelled run while tar is silent


def gnu_tar_of(host: DockerHost, image: str) -> str:
    """Return the path of GNU tar in ``image`` (from its label), or '' if it has none or the label
    cannot be read. Asked each time: the image behind a tag can be rebuilt while volsafe runs."""
    try:
        with docker_errors(host):
            labels = (host.api.inspect_image(image).get("Config") or {}).get("Labels") or {}
    except VolsafeError:
        return ""
    return str(labels.get(GNU_TAR_LABEL, ""))


@contextlib.contextmanager
def volume_tar(host: DockerHost, image: str, source: str, *, role: str, mount_type: str = "volume") -> Iterator[Iterator[bytes]]:
    """Yield an iterator over a tar of the volume ``source`` (a host directory with
    ``mount_type="bind"``), mounted read-only in a helper from ``image``; entries ``./``, ``./a``…

    Raises VolsafeError if it cannot be read; the helper is removed on every path.
    """
    gnu_tar = gnu_tar_of(host, image) if fifo_possible(host, image) else ""
    if gnu_tar:
        streaming = False
        try:
            with fifo_tar(host, image, source, gnu_tar, role=role, mount_type=mount_type) as chunks:
                log.debug("reading %s through a FIFO from %s", source, gnu_tar)
                streaming = True
                yield chunks
            return
        except FastPathUnavailable as exc:
            if streaming:
                raise  # from the caller's block: not ours to retry
            mark_unavailable(host, image)
            log.info("%s; reading %s through Docker's archive endpoint", exc, source)
    with created_helper(host, image, source, role=role, writable=False, mount_type=mount_type) as helper, archive_stream(
        host, helper
    ) as chunks:
        yield chunks


@contextlib.contextmanager
def fifo_tar(
    host: DockerHost, image: str, source: str, gnu_tar: str, *, role: str, mount_type: str = "volume"
) -> Iterator[Iterator[bytes]]:
    """Yield the tar that GNU tar writes, in a started read-only helper, into a FIFO of ours.

    Raises FastPathUnavailable if the helper cannot be started or does not start writing (nothing
    was read then), NotFoundError if the image is gone, VolsafeError if tar fails or stalls later,
    Cancelled if the run is cancelled while reading.
    """
    with fifo_dir() as io:
        reader = FifoReader(io.fifo)
        try:
            container_id = _start_fifo_helper(host, image, source, gnu_tar, io, role, mount_type)
            try:
                first = _first_bytes(host, container_id, reader, io.errors)
                yield _rest(host, container_id, reader, first, io.errors)
            finally:
                with contextlib.suppress(VolsafeError):
                    _remove(host, container_id)  # kills tar if it still runs
        finally:
            reader.close()  # after the removal: a read in another thread then gets EOF, not a reused fd


def _start_fifo_helper(host: DockerHost, image: str, source: str, gnu_tar: str, io: FifoDir, role: str, mount_type: str) -> str:
    """Create and start the helper that runs GNU tar into the FIFO; return its id.

    Raises FastPathUnavailable if it cannot be created or started, NotFoundError if the image is gone.
    """
    command = [
        "sh", "-c", f'exec "$0" --create --file {IO_DIR}/{FIFO_NAME} --format=gnu --sort=name --numeric-owner '
        f'--warning=no-file-ignored --directory /volsafe/target . 2>{IO_DIR}/errors', gnu_tar,
    ]
    try:
        container_id = _create(
            host, image, source, role=role, writable=False, command=command, mount_type=mount_type,
            extra_mounts=(io.mount,), reads_all=True,
        )
    except NotFoundError:
        raise
    except VolsafeError as exc:
        raise FastPathUnavailable(f"cannot create a FIFO helper: {exc}") from None
    try:
        with docker_errors(host):
            host.api.start(container_id)
    except BaseException as exc:
        with contextlib.suppress(VolsafeError):
            _remove(host, container_id)
        if isinstance(exc, VolsafeError):
            raise FastPathUnavailable(f"cannot start a FIFO helper: {exc}") from None
        raise
    return container_id


def _first_bytes(host: DockerHost, container_id: str, reader: FifoReader, errors: str) -> bytes:
    """Wait for the helper's first bytes and return them.

    Raises FastPathUnavailable if the helper ends, or times out, without writing: whatever stopped
    it (a FIFO it cannot reach or open, a tar that cannot run), the archive endpoint may still work,
    and reports its own error if it does not.
    """
    deadline = time.monotonic() + FIRST_BYTE_TIMEOUT
    while time.monotonic() < deadline:
        raise_if_cancelled()
        data = reader.read(100)
        if data:
            return data
        # Before any writer came, a FIFO reads as nothing (None); b"" means one came and went.
        if data is None and _state(host, container_id).get("Running"):
            continue
        code = _wait(host, container_id)
        raise FastPathUnavailable(f"the FIFO helper wrote nothing (exit code {code}: {_last_line(errors) or 'no message'})")
    raise FastPathUnavailable(f"the FIFO helper wrote nothing in {FIRST_BYTE_TIMEOUT:g}s")


def _rest(host: DockerHost, container_id: str, reader: FifoReader, first: bytes, errors: str) -> Iterator[bytes]:
    """Yield ``first`` and everything else tar writes; at the end, check how tar exited.

    Raises VolsafeError if tar fails or writes nothing for STALL_TIMEOUT, Cancelled if the run is
    cancelled meanwhile.
    """
    yield first
    silent_since = time.monotonic()
    while True:
        data = reader.read(_POLL_MS)
        if data:
            silent_since = time.monotonic()
            yield data
        elif data == b"":
            break
        else:
            raise_if_cancelled()
            if time.monotonic() - silent_since > STALL_TIMEOUT:
                raise VolsafeError(f"tar in the helper container wrote nothing for {STALL_TIMEOUT:g}s")
    check_tar_exit(_wait(host, container_id), errors)


def _state(host: DockerHost, container_id: str) -> dict:
    with docker_errors(host):
        return host.api.inspect_container(container_id).get("State") or {}


def _wait(host: DockerHost, container_id: str) -> int:
    """Return the helper's exit code, once it has exited. Raises VolsafeError."""
    with docker_errors(host):
        return int(host.api.wait(container_id, timeout=60).get("StatusCode", -1))


def check_tar_exit(code: int, errors: str) -> None:
    """Return if GNU tar's exit ``code`` and messages (in file ``errors``) mean a whole archive.

    Exit 1 is GNU tar's "some files differ": a file changed, grew or vanished while it was read.
    The archive is whole, as Docker's endpoint makes it from a live volume; the first such message
    is logged. But a file that *shrank* was padded with zeros, which would store data that never
    was: that fails, like every other exit. Raises VolsafeError naming tar's message and exit code.
    """
    if code == 0:
        return
    shrank, first = _scan_messages(errors)
    if code == 1 and not shrank:
        log.warning("the volume changed while it was read (GNU tar exit 1): %s; stop or pause its containers for a consistent backup", first)
        return
    reason = shrank or _last_line(errors) or "no message"
    hint = " (a file shrank while it was read: stop or pause the containers that write to the volume)" if shrank else ""
    raise VolsafeError(f"tar in the helper container failed (exit code {code}): {reason}{hint}")


def _scan_messages(path: str) -> tuple[str, str]:
    """Return (the first "shrank" message, the first message) of GNU tar's errors file, read line
    by line (it holds a line per changed file, which can be many)."""
    first = shrank = ""
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                line = raw.decode(errors="replace").strip()
                if line and not first:
                    first = line
                if "shrank by" in line:
                    shrank = line
                    break
    except OSError:
        pass
    return shrank, first


def _last_line(path: str) -> str:
    """Return the last non-empty line of ``path`` (read from its last 4 KiB), or ''."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 4096))
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
