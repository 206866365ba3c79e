"""Short-lived, locked-down helper containers that mount one volume.

Every helper:
- has no network, the ``none`` log driver (so no archive byte lands in a container log),
  ``no-new-privileges`` and every capability dropped, except the few that tar needs to restore
  owners, modes and device nodes when the helper writes;
- carries ``io.volsafe.*`` labels so that orphans can be found;
- is removed on every path, including errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from backup.docker.host import DockerHost, docker_errors
from backup.errors import NotFoundError, VolsafeError
from backup.docker.http_chunked import ChunkedBodyError, iter_chunked

if TYPE_CHECKING:
    from docker.types import Mount  # the SDK loads with the first connection (backup.docker.host)

LABEL = "io.volsafe.helper"
MOUNT_POINT = "/volsafe/target"
MOUNT_PARENT = "/volsafe"
# What busybox tar needs to recreate a tree as root: chown, write into dirs it does not own,
# chmod/utime files it does not own, keep setuid/setgid across chown, and mknod.
WRITER_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD"]
_OUTPUT_LIMIT = 64 * 1024  # keep the tail of a helper's output for error messages


@dataclass(frozen=True)
class HelperResult:
    """How a helper that ran a command ended."""

    exit_code: int
    output: str  # stdout and stderr, interleaved, last 64 KiB

    def last_line(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.exit_code}"


def _create(
    host: DockerHost,
    image: str,
    volume: str,
    *,
    role: str,
    writable: bool,
    command: list[str],
    mount_type: str = "volume",
    extra_mounts: tuple[Mount, ...] = (),
    reads_all: bool = False,
) -> str:
    """Create (not start) a helper container and return its id.

    ``volume`` is a volume name, or with ``mount_type="bind"`` a directory on the daemon's host.
    ``reads_all`` lets a read-only helper's own commands read every file whatever its owner and
    mode, as Docker's archive endpoint does from outside the container: CAP_DAC_OVERRIDE (the
    volume is mounted read-only), not CAP_DAC_READ_SEARCH, with which Docker's default seccomp
    profile allows open_by_handle_at, a way out of the container's mounts.
    """
    from docker.types import Mount

    api = host.api
    if mount_type == "bind":
        mount = Mount(MOUNT_POINT, volume, type="bind", read_only=not writable)
    else:
        mount = Mount(MOUNT_POINT, volume, type="volume", read_only=not writable, no_copy=True)
    host_config = api.create_host_config(
        mounts=[mount, *extra_mounts],
        network_mode="none",
        log_config={"type": "none"},
        security_opt=["no-new-privileges"],
        cap_drop=["ALL"],
        cap_add=WRITER_CAPS if writable else (["DAC_OVERRIDE"] if reads_all else None),
    )
    from backup.quiesce.recovery import owner_fields

    owner = owner_fields()
    labels = {
        LABEL: "true",
        "io.volsafe.role": role,
        "io.volsafe.volume": volume,
        "io.volsafe.pid": str(os.getpid()),
        "io.volsafe.pidns": owner["pid_namespace"] or "",  # the pid is this namespace's (volsafe may run in a container)
        "io.volsafe.boot": owner["boot_id"] or "",
        "io.volsafe.container": owner["container"] or "",  # a restart of this container ends the pid's namespace
        "io.volsafe.created": str(int(time.time())),
    }
    # A bind source is a path; container names allow only [a-zA-Z0-9_.-].
    shown = re.sub(r"[^a-zA-Z0-9_.-]+", "_", volume).strip("_.-")[:40] or "root"
    name = f"volsafe-{role}-{shown}-{secrets.token_hex(4)}"
    try:
        with docker_errors(host):
            created = api.create_container(
                image,
                command=command,
                name=name,
                labels=labels,
                host_config=host_config,
                network_disabled=True,
                working_dir="/",
            )
    except BaseException:
        # Ctrl-C or SIGTERM can land after the daemon created the container but before its id
        # reached us: remove it by the name we chose (a name that was never created is fine).
        with contextlib.suppress(VolsafeError):
            _remove(host, name)
        raise
    return created["Id"]


def _remove(host: DockerHost, container_id: str) -> None:
    """Force-remove the container; a container that is already gone is fine."""
    try:
        with docker_errors(host):
            host.api.remove_container(container_id, force=True, v=False)
    except NotFoundError:
        pass


@contextlib.contextmanager
def created_helper(
    host: DockerHost, image: str, volume: str, *, role: str, writable: bool, mount_type: str = "volume"
) -> Iterator[str]:
    """Yield the id of a created, never started helper with ``volume`` at /volsafe/target.

    Docker's archive endpoints work on such a container; it is removed on exit. With
    ``mount_type="bind"``, ``volume`` is a directory on the daemon's host.
    """
    container_id = _create(host, image, volume, role=role, writable=writable, command=["true"], mount_type=mount_type)
    try:
        yield container_id
    finally:
        _remove(host, container_id)


@contextlib.contextmanager
def archive_stream(host: DockerHost, container_id: str, chunk_size: int = 1 << 20) -> Iterator[Iterator[bytes]]:
    """Yield an iterator over a tar of the helper's volume (entries ``.``, ``./a``, …).

    Reads Docker's archive endpoint. The HTTP response is closed on exit even when the stream was
    not read to its end: the daemon holds the container while it streams, so removing the helper
    before closing would wait forever.
    """
    api = host.api
    with docker_errors(host):
        # The SDK's get_archive hides the response, and with it any way to close it early.
        response = api._get(
            api._url("/containers/{0}/archive", container_id),
            params={"path": f"{MOUNT_POINT}/."},
            stream=True,
            headers={"Accept-Encoding": "identity"},
        )
        api._raise_for_status(response)
    try:
        yield _guarded(host, _body_chunks(response, chunk_size))
    finally:
        response.close()


def _body_chunks(response, chunk_size: int) -> Iterator[bytes]:
    """Return the response body as chunks, through the fast chunked decoder where it applies."""
    buffered = getattr(getattr(response.raw, "_fp", None), "fp", None)  # http.client's socket reader
    chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
    if chunked and buffered is not None and hasattr(buffered, "read1"):
        return iter_chunked(buffered, chunk_size)
    return response.raw.stream(chunk_size, decode_content=False)


def _guarded(host: DockerHost, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        with docker_errors(host):
            yield from chunks
    except ChunkedBodyError as exc:
        raise VolsafeError(f"Docker daemon at {host.url}: broken archive stream: {exc}") from None


def _raw_socket(attached) -> socket.socket:
    # docker-py hands back a SocketIO wrapper for unix sockets; shutdown() needs the socket itself.
    return getattr(attached, "_sock", attached)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Return exactly ``size`` bytes from ``sock``, or None if the stream ends first."""
    data = bytearray()
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            return None
        data += piece
    return bytes(data)


def read_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """Yield (stream, payload) of a non-TTY attach or exec stream (8-byte frame headers) until it
    ends; stream 1 is stdout, 2 is stderr, interleaved in the order the command wrote them.
    """
    while True:
        header = _recv_exact(sock, 8)
        if header is None:
            return
        payload = _recv_exact(sock, struct.unpack(">I", header[4:])[0])
        if payload is None:
            return
        yield header[0], payload


class _OutputCollector(threading.Thread):
    """Reads a helper command's output stream and keeps its tail."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock = sock
        self.buffer = bytearray()

    def run(self) -> None:
        try:
            for _stream, payload in read_frames(self.sock):
                self.buffer += payload
                del self.buffer[:-_OUTPUT_LIMIT]
        except OSError:
            return
        finally:
            # The output ends when the command exits. The daemon may keep the connection open for
            # a command that died, so shut it down here: a sender still blocked in sendall then
            # fails at once instead of waiting for the socket timeout.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def text(self) -> str:
        return self.buffer.decode(errors="replace")


class HelperSession:
    """A running helper container; commands run in it with ``exec`` while the volume stays mounted.

    One container for all steps of a restore keeps volumes whose data lives only while mounted
    (for example the local driver's tmpfs type) intact between the steps.
    """

    def __init__(self, host: DockerHost, container_id: str):
        self.host = host
        self.id = container_id

    def exec(self, command: list[str], stdin: Iterable[bytes] | None = None) -> HelperResult:
        """Run ``command`` in the helper, feeding it ``stdin``; return its exit code and output tail.

        A command given no ``stdin`` gets none attached (it reads /dev/null): with stdin attached and
        closed at once, Docker 20.10 now and then ended the output stream before a short command's
        output was copied (``stat`` answered nothing with exit code 0, seen under load).

        If iterating ``stdin`` raises, the exception propagates; the caller removes the helper, which
        kills the command, so a partial stream is never taken for a whole one.
        """
        api = self.host.api
        if api.base_url.startswith("https://"):
            return self._exec_over_tls(command, stdin or ())
        with docker_errors(self.host):
            exec_id = api.exec_create(self.id, command, stdin=stdin is not None, stdout=True, stderr=True)["Id"]
            sock = _raw_socket(api.exec_start(exec_id, socket=True))
        collector = _OutputCollector(sock)
        collector.start()
        try:
            try:
                for chunk in stdin or ():
                    sock.sendall(chunk)
            except BrokenPipeError:
                pass  # the command stopped reading; its exit code tells why
            except OSError as exc:
                raise VolsafeError(f"lost the connection to the helper container: {exc}") from exc
            except BaseException:
                # The command sees a cut-short stdin and stops; wait for that, so that nothing it
                # still writes can race with the caller's clean-up.
                self._close(sock)
                self._exit_code(exec_id)
                raise
            if stdin is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)  # EOF on the command's stdin
            collector.join()  # the stream ends when the command exits
            return HelperResult(self._exit_code(exec_id), collector.text())
        finally:
            self._close(sock)

    def _exec_over_tls(self, command: list[str], stdin: Iterable[bytes]) -> HelperResult:
        """Run ``command`` over a TLS connection to the daemon; return its exit code and output.

        A TLS socket cannot half-close: shutting down its write side ends the whole TLS session,
        so the command's output could not be read back on the same stream. So the command writes
        its output to a file in the helper, its stdin gets EOF when the stream is closed outright,
        and the output is read back with a second exec that takes no stdin.
        """
        api = self.host.api
        out = f"/tmp/volsafe-exec-{secrets.token_hex(4)}.out"
        wrapped = ["sh", "-c", 'out="$1"; shift; exec "$@" >"$out" 2>&1', "sh", out, *command]
        with docker_errors(self.host):
            exec_id = api.exec_create(self.id, wrapped, stdin=True, stdout=False, stderr=False)["Id"]
            sock = _raw_socket(api.exec_start(exec_id, socket=True))
        try:
            for chunk in stdin:
                sock.sendall(chunk)
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError):
                self._close(sock)
                raise VolsafeError(f"lost the connection to the helper container: {exc}") from exc
        except BaseException:
            self._close(sock)
            self._exit_code(exec_id)
            raise
        self._close(sock)  # the daemon closes the command's stdin: EOF
        code = self._exit_code(exec_id)
        with docker_errors(self.host):
            reader = api.exec_create(self.id, ["sh", "-c", 'cat "$1"; rm -f "$1"', "sh", out], stdout=True, stderr=True)["Id"]
            output = api.exec_start(reader)
        return HelperResult(code, (output or b"")[-_OUTPUT_LIMIT:].decode(errors="replace"))

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _exit_code(self, exec_id: str, timeout: float = 60.0) -> int:
        """Return the exit code of a finished exec; raise VolsafeError if it runs on past ``timeout``."""
        deadline = time.monotonic() + timeout
        with docker_errors(self.host):
            while time.monotonic() < deadline:
                info = self.host.api.exec_inspect(exec_id)
                if not info.get("Running"):
                    code = info.get("ExitCode")
                    return int(code) if code is not None else -1
                time.sleep(0.05)
        raise VolsafeError("a command in the helper container did not finish in time")

    def put_archive(self, path: str, data) -> None:
        """Extract tar ``data`` (bytes or a file) into ``path`` through Docker's archive endpoint."""
        with docker_errors(self.host):
            self.host.api.put_archive(self.id, path, data)


@contextlib.contextmanager
def helper_session(
    host: DockerHost,
    image: str,
    volume: str,
    *,
    role: str,
    writable: bool,
    mount_type: str = "volume",
    extra_mounts: tuple[Mount, ...] = (),
    reads_all: bool = False,
) -> Iterator[HelperSession]:
    """Yield a started helper with ``volume`` at /volsafe/target (and ``extra_mounts``); it is
    removed on exit, on every path. ``reads_all`` as for ``_create``."""
    # busybox sleep takes seconds as a number; the container is force-removed long before this ends.
    container_id = _create(
        host, image, volume, role=role, writable=writable, command=["sleep", "2147483647"], mount_type=mount_type,
        extra_mounts=extra_mounts, reads_all=reads_all,
    )
    try:
        with docker_errors(host):
            host.api.start(container_id)
        yield HelperSession(host, container_id)
    finally:
        _remove(host, container_id)


def run_helper(
    host: DockerHost, image: str, volume: str, command: list[str], *, role: str, writable: bool, mount_type: str = "volume"
) -> HelperResult:
    """Run one command in a fresh helper with ``volume`` mounted; return its exit code and output."""
    with helper_session(host, image, volume, role=role, writable=writable, mount_type=mount_type) as helper:
        return helper.exec(command)
