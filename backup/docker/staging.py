"""Writing a tar stream into a volume all or nothing: staging directory, commit, rollback.

Shared by ``restore`` (from a stored archive) and ``migrate`` (from another daemon). The tar is
extracted by busybox tar into a hidden staging directory inside the target volume. Only when the
caller's checks passed are the staged entries swapped in with renames (``commit``). On any failure
a volume that was created for the write is removed, and an existing volume keeps its old contents.

busybox tar restores owners, modes, links and special files, but sets the mtime of a directory
before it fills it and never sets a symlink's mtime. So the caller keeps the headers of directories
and symlinks aside while streaming (``TarScanner``'s metadata sink), and ``commit`` re-applies them
through Docker's archive endpoint, which sets them last.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import posixpath
import secrets
import shlex
import tarfile
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from backup.docker.host import DockerHost, docker_errors
from backup.errors import NotFoundError, TargetNotEmpty, UnsafeTarget, VolsafeError
from backup.docker.helper import LABEL as HELPER_LABEL
from backup.docker.helper import MOUNT_PARENT, MOUNT_POINT, HelperResult, HelperSession, helper_session, run_helper
from backup.docker.fifo import (
    FIFO_NAME,
    IO_DIR,
    FastPathUnavailable,
    FifoDir,
    fifo_dir,
    fifo_possible,
    mark_unavailable,
    release_reader,
    write_all,
)
from backup.quiesce.recovery import WriteRecord

log = logging.getLogger(__name__)

STAGING_PREFIX = ".volsafe-restore-"
OLD_PREFIX = ".volsafe-old-"
SPOOL_LIMIT = 8 << 20  # directory and symlink headers beyond this spill to a temporary file

# Every entry counts, whatever its name: a user's file may be called .volsafe-restore-* too. The
# leftovers of a volsafe that was killed are removed by the next command's crash recovery, which
# knows them by their recorded names (``backup.quiesce.recovery.WriteRecord``).
PROBE_SCRIPT = f"""
find {MOUNT_POINT} -mindepth 1 -maxdepth 1 | head -n 1
"""
EXTRACT_SCRIPT = f"""
set -eu
mkdir "{MOUNT_POINT}/$1"
exec tar -x -f - -C "{MOUNT_POINT}/$1"
"""
# Move the old contents aside, move the staged ones in, and only then delete the old ones. Earlier
# leftovers are swept out with the old contents (the target was empty, or --force). The one window
# that is not all-or-nothing: a helper killed between the two loops of renames leaves the old
# entries in .volsafe-old-* and only part of the new ones in place; no data is lost, but the
# volume needs a fresh restore.
COMMIT_SCRIPT = f"""
set -eu
t={MOUNT_POINT}
old="{OLD_PREFIX}$2"
mkdir "$t/$old"
find "$t" -mindepth 1 -maxdepth 1 ! -name "$1" ! -name "$old" -exec mv -f {{}} "$t/$old/" \\;
find "$t/$1" -mindepth 1 -maxdepth 1 -exec mv -f {{}} "$t/" \\;
rmdir "$t/$1"
rm -rf "$t/$old"
"""
# Also puts back the root's mtime, which creating and removing the staging directory changed.
DISCARD_SCRIPT = f"""
rm -rf "{MOUNT_POINT}/$1" && touch -c -d "@$2" {MOUNT_POINT}
"""


def is_empty(host: DockerHost, image: str, volume: str, mount_type: str = "volume") -> bool:
    """Return whether the volume holds no entries at all.

    With ``mount_type="bind"``, ``volume`` is a directory on the daemon's host.
    Raises VolsafeError if it cannot be inspected.
    """
    result = run_helper(host, image, volume, ["sh", "-c", PROBE_SCRIPT], role="probe", writable=False, mount_type=mount_type)
    if result.exit_code != 0:
        raise VolsafeError(f"cannot inspect volume {volume!r}: {result.last_line()}")
    return result.output.strip() == ""


def check_target(host: DockerHost, image: str, volume: str, *, force: bool) -> bool:
    """Return whether the target volume exists. Raises TargetNotEmpty if it has data and not ``force``."""
    exists = host.volume_exists(volume)
    if exists and not force and not is_empty(host, image, volume):
        raise TargetNotEmpty(f"volume {volume!r} exists and is not empty; use --force to replace its contents")
    return exists


def create_volume(
    host: DockerHost, volume: str, *, driver: str, driver_opts: dict, labels: dict, record: WriteRecord | None = None
) -> None:
    """Create ``volume`` with the given driver, driver options and labels. Raises VolsafeError.

    With ``record``, the volume is recorded as created by this process before it is created, with
    the daemon's clock before then, so that crash recovery removes it if this process dies.
    """
    if record is not None:
        record.save(created=True, phase="create", daemon_time=str(host.info.get("SystemTime") or ""))
    with docker_errors(host):
        host.api.create_volume(volume, driver=driver, driver_opts=driver_opts or None, labels=labels or None)


# ---------------------------------------------------------------------------------------------
# Where a write lands: volumes are created with the default driver unless the user asks for the
# recorded one, and never written where another volume keeps its data or at an unnamed host path.

DEFAULT_DRIVER = "local"


def host_device(driver: str, options: dict) -> str | None:
    """Return the ``device`` that a volume of ``driver`` with ``options`` mounts from the host (a
    directory bound with ``o=bind``, or a block device, NFS export…), or None if it mounts none of
    the host's: a plain local volume, or tmpfs. Such a volume writes wherever ``device`` says."""
    if (driver or DEFAULT_DRIVER) != DEFAULT_DRIVER or not options:
        return None
    bind = "bind" in str(options.get("o", "")).lower()
    if bind or ("device" in options and str(options.get("type", "")).lower() != "tmpfs"):
        return str(options.get("device", ""))
    return None


def _same_device(given: str, device: str) -> bool:
    if given.startswith("/") and device.startswith("/"):
        return posixpath.normpath(given) == posixpath.normpath(device)
    return given == device


def device_named(device: str, bind_devices: Iterable[str]) -> bool:
    """Return whether the user named ``device`` with --bind-device."""
    return any(given and _same_device(given, device) for given in bind_devices)


def describe_driver(driver: str, options: dict) -> str:
    """Return ``driver`` and ``options`` as one line's worth of text."""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "no options"
    return f"driver {driver or DEFAULT_DRIVER} ({shown})"


def require_named_device(volume: str, driver: str, options: dict, bind_devices: Iterable[str], source: str) -> None:
    """Raise UnsafeTarget if creating ``volume`` with ``driver`` and ``options`` would mount a host
    device that the user did not name with --bind-device. ``source`` says where they come from."""
    device = host_device(driver, options)
    if device is not None and not device_named(device, bind_devices):
        raise UnsafeTarget(
            f"{source} would create volume {volume!r} on the host's {device or '(no device)'!r} "
            f"({describe_driver(driver, options)}); to allow that, give --bind-device {shlex.quote(device or '')}"
        )


def _within(path: str, other: str) -> bool:
    """Return whether ``path`` is ``other`` or lies below it."""
    return path == other or other == "/" or path.startswith(other.rstrip("/") + "/")


def _data_places(info: dict) -> list[str]:
    """Return the host paths where a volume (inspect or list data) keeps its data."""
    places = []
    mountpoint = info.get("Mountpoint") or ""
    if mountpoint.startswith("/"):
        places.append(posixpath.normpath(mountpoint))
    device = host_device(info.get("Driver") or DEFAULT_DRIVER, info.get("Options") or {})
    if device and device.startswith("/"):
        places.append(posixpath.normpath(device))
    return places


def check_write_location(
    host: DockerHost, volume: str, *, bind_devices: Iterable[str] = (), planned: tuple[str, dict] | None = None
) -> None:
    """Refuse to write into ``volume`` where that would write somewhere else too.

    Looks where the volume keeps its data (its mountpoint, and the host device of a local bind or
    device volume), or with ``planned`` (driver, options) where a volume about to be created
    would. Raises UnsafeTarget when that place is, holds or lies inside another volume's place,
    or is a host device that the user did not name with --bind-device; VolsafeError if the daemon
    cannot be asked.
    """
    bind_devices = list(bind_devices)
    with docker_errors(host):
        listing = host.api.volumes().get("Volumes") or []
    if planned is not None:
        info: dict = {"Name": volume, "Driver": planned[0], "Options": planned[1]}
    else:
        listed: dict | None = next((v for v in listing if v.get("Name") == volume), None)
        info = listed or host.volume(volume)
    device = host_device(info.get("Driver") or DEFAULT_DRIVER, info.get("Options") or {})
    if device is not None and not device_named(device, bind_devices):
        raise UnsafeTarget(
            f"volume {volume!r} keeps its data on the host's {device or '(no device)'!r} "
            f"({describe_driver(info.get('Driver') or DEFAULT_DRIVER, info.get('Options') or {})}); "
            f"to write there, give --bind-device {shlex.quote(device or '')}"
        )
    places = _data_places(info)
    for other in listing:
        if other.get("Name") == volume:
            continue
        for place in places:
            for theirs in _data_places(other):
                if _within(place, theirs) or _within(theirs, place):
                    raise UnsafeTarget(
                        f"volume {volume!r} keeps its data at {place}, which overlaps {theirs}, where volume "
                        f"{other.get('Name')!r} keeps its data; refusing to write into it"
                    )


def metadata_tar(raw_headers, target_name: str) -> tempfile.SpooledTemporaryFile:
    """Return a tar of the kept directory and symlink headers, renamed under ``target_name``.

    Entry ``.`` becomes ``target_name`` itself, so the volume root gets its owner, mode and mtime.
    """
    raw_headers.write(bytes(1024))  # end-of-archive marker
    raw_headers.seek(0)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT)
    with tarfile.open(fileobj=raw_headers, mode="r|") as src, tarfile.open(
        fileobj=out, mode="w|", format=tarfile.PAX_FORMAT
    ) as dst:
        for member in src:
            relative = member.name[2:] if member.name.startswith("./") else member.name
            member.name = target_name if relative in (".", "") else f"{target_name}/{relative}"
            # tarfile writes a member's old pax records over its attributes; let it derive fresh ones.
            member.pax_headers = {}
            dst.addfile(member)
    out.seek(0)
    return out


# The helper end of the FIFO path: open the FIFO, wait for volsafe's go byte (read alone, so not a
# byte of the tar is taken), then run the command with the FIFO as its stdin. A FIFO that is closed
# without the go byte (volsafe gave up on it) makes it exit 99 before the command runs.
FIFO_STDIN = f"""
exec <"{IO_DIR}/{FIFO_NAME}" || exit 99
[ "$(dd bs=1 count=1 2>/dev/null)" = G ] || exit 99
exec "$@"
"""
_GO = b"G"


class StagedTarget:
    """A running writer helper on the target volume, with a staging directory name reserved in it.

    With ``fifo`` (a FifoDir mounted into the helper at IO_DIR) the tar goes to the helper's tar
    through that FIFO, not through Docker's exec stdin; ``fifo_failed`` is called if that cannot
    start, and the stdin path is used instead.
    """

    def __init__(
        self,
        helper: HelperSession,
        volume: str,
        action: str,
        root: str = MOUNT_POINT,
        fifo: FifoDir | None = None,
        fifo_failed: Callable[[], None] = lambda: None,
        record: WriteRecord | None = None,
    ):
        self.helper = helper
        self.record = record  # the crash record of this write, told of the commit
        self.fifo = fifo
        self.fifo_failed = fifo_failed
        self.volume = volume
        # Where the tree lives in ``helper``: the helper's mount point, or (restore --to-container)
        # a path in a running application container, checked by the caller to need no quoting.
        self.root = root
        self.action = action  # "restore" or "migration", for messages
        self.token = secrets.token_hex(6)
        self.staging = f"{STAGING_PREFIX}{self.token}"
        self.committed = False  # the staged tree was swapped in: there is no staging directory to discard

    def extract(self, tar_chunks: Iterable[bytes], script: str = EXTRACT_SCRIPT, args: Iterable[str] = ()) -> HelperResult:
        """Run ``script`` (``$1`` is the staging directory name) with the tar stream on its stdin.

        Returns the result. Raises VolsafeError if the script failed; exceptions from iterating
        ``tar_chunks`` propagate (the partial stream is then never committed).
        """
        command = ["sh", "-c", self._at_root(script), "sh", self.staging, *args]
        result = None
        if self.fifo is not None:
            try:
                log.debug("writing into %s through a FIFO", self.volume)
                result = self._exec_through_fifo(command, tar_chunks)
            except FastPathUnavailable as exc:
                log.info("%s; writing into %s through Docker's exec stdin", exc, self.volume)
                self.fifo = None
                self.fifo_failed()
        if result is None:
            result = self.helper.exec(command, stdin=tar_chunks)
        if result.exit_code != 0:
            raise VolsafeError(f"{self.action} into {self.volume!r} failed: tar in the helper exited {result.exit_code}: {result.last_line()}")
        return result

    def _exec_through_fifo(self, command: list[str], tar_chunks: Iterable[bytes]) -> HelperResult:
        """Run ``command`` with the FIFO as its stdin while ``tar_chunks`` are written into it; return
        its result. Raises FastPathUnavailable (nothing taken from ``tar_chunks``, the command not
        run) if the helper does not open the FIFO; exceptions from ``tar_chunks`` propagate."""
        done: dict[str, Any] = {}

        def run() -> None:
            try:
                done["result"] = self.helper.exec(["sh", "-c", FIFO_STDIN, "sh", *command])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done["error"] = exc

        assert self.fifo is not None  # only called with a FIFO
        runner = threading.Thread(target=run, name="fifo-exec", daemon=True)
        runner.start()
        try:
            write_all(self.fifo.fifo, itertools.chain([_GO], tar_chunks), reader_alive=runner.is_alive)
        except FastPathUnavailable:
            release_reader(self.fifo.fifo)  # a helper still waiting in open() gets EOF: exit 99
            runner.join(timeout=5)
            raise
        except BaseException:
            runner.join(timeout=60)  # the command saw a cut-short stream and stops
            raise
        runner.join()
        if "error" in done:
            raise done["error"]
        return done["result"]

    def commit(self, raw_headers) -> None:
        """Swap the staged tree in, then apply directory and symlink metadata. Raises VolsafeError."""
        if self.record is not None:
            self.record.save(phase="commit")
        result = self.helper.exec(["sh", "-c", self._at_root(COMMIT_SCRIPT), "sh", self.staging, self.token])
        if result.exit_code != 0:
            raise VolsafeError(f"could not swap the new data into {self.volume!r}: {result.last_line()}")
        self.committed = True
        parent, _, name = self.root.rpartition("/")
        with metadata_tar(raw_headers, name) as metadata:
            if self.root == MOUNT_POINT:
                self.helper.put_archive(MOUNT_PARENT, metadata)
            else:
                # Docker's archive endpoint does not write into tmpfs mounts; the container's tar does.
                chunks = iter(lambda: metadata.read(1 << 20), b"")
                applied = self.helper.exec(["tar", "-x", "-f", "-", "-C", parent or "/"], stdin=chunks)
                if applied.exit_code != 0:
                    raise VolsafeError(f"could not set directory metadata in {self.volume!r}: {applied.last_line()}")

    def _at_root(self, script: str) -> str:
        return script if self.root == MOUNT_POINT else script.replace(MOUNT_POINT, self.root)

    def root_mtime(self) -> str:
        """Return the volume root's mtime in seconds, as text. Raises VolsafeError."""
        result = self.helper.exec(["stat", "-c", "%Y", self.root])
        if result.exit_code != 0 or not result.output.strip().isdigit():
            raise VolsafeError(f"cannot inspect the target volume: {result.last_line()}")
        return result.output.strip()

    def discard(self, root_mtime: str) -> bool:
        """Remove the staging directory after a failure; return whether that worked (never raises)."""
        try:
            result = self.helper.exec(["sh", "-c", self._at_root(DISCARD_SCRIPT), "sh", self.staging, root_mtime])
            if result.exit_code == 0:
                return True
            log.debug("could not remove %s from %s: %s", self.staging, self.volume, result.last_line())
        except VolsafeError as exc:
            log.debug("could not remove %s from %s: %s", self.staging, self.volume, exc)
        return False


def _discard_in_new_helper(host: DockerHost, image: str, target: StagedTarget, root_mtime: str, mount_type: str = "volume") -> None:
    """Remove the staging directory through a fresh helper (the session's own one died); log failures."""
    try:
        result = run_helper(
            host,
            image,
            target.volume,
            ["sh", "-c", DISCARD_SCRIPT, "sh", target.staging, root_mtime],
            role="cleanup",
            writable=True,
            mount_type=mount_type,
        )
        if result.exit_code != 0:
            log.error("could not remove %s from %s: %s", target.staging, target.volume, result.last_line())
    except VolsafeError as exc:
        log.error("could not remove %s from %s: %s", target.staging, target.volume, exc)


def remove_volume(host: DockerHost, volume: str) -> None:
    """Remove a volume that a failed write (or a restore test) created; log (never raise) if that fails.

    While the daemon says the volume is in use (a SIGTERM can land while a helper's removal is
    still under way), volsafe's own helpers on it are removed and the removal tried again, for up
    to 30 s; a container that is not a volsafe helper is never touched. It is tried again even when
    no helper is listed: one whose removal is already under way may no longer be (seen in CI: a
    restore test's scratch volume left behind after SIGTERM)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with docker_errors(host):
                host.api.remove_volume(volume, force=True)
            return
        except VolsafeError as exc:
            if "in use" not in str(exc) or time.monotonic() >= deadline:
                log.error("could not remove volume %s after the failure: %s", volume, exc)
                return
            helpers = []
            with contextlib.suppress(VolsafeError), docker_errors(host):
                helpers = host.api.containers(all=True, filters={"volume": volume, "label": f"{HELPER_LABEL}=true"})
            for container in helpers:
                with contextlib.suppress(VolsafeError), docker_errors(host):
                    host.api.remove_container(container["Id"], force=True)
            time.sleep(0.2)


@contextlib.contextmanager
def _writer_helper(
    host: DockerHost, image: str, volume: str, *, role: str, mount_type: str, extra_mounts: tuple = ()
) -> Iterator[tuple[HelperSession, FifoDir | None]]:
    """Yield a started writer helper on ``volume`` and, where the FIFO path may work, the FifoDir
    mounted into it (else None: a helper that could not mount one is made again without).
    With ``extra_mounts`` (restic's repository and binary), no FIFO: the writer is not tar."""
    if extra_mounts:
        with helper_session(host, image, volume, role=role, writable=True, mount_type=mount_type, extra_mounts=extra_mounts) as writer:
            yield writer, None
        return
    with contextlib.ExitStack() as stack:
        fifo = stack.enter_context(fifo_dir()) if fifo_possible(host, image) else None
        helper: HelperSession | None = None
        if fifo is not None:
            try:
                helper = stack.enter_context(
                    helper_session(host, image, volume, role=role, writable=True, mount_type=mount_type, extra_mounts=(fifo.mount,))
                )
            except NotFoundError:
                raise
            except VolsafeError as exc:
                log.info("cannot mount a FIFO into the helper (%s); using Docker's exec stdin", exc)
                mark_unavailable(host, image)
                fifo = None
        if helper is None:
            helper = stack.enter_context(helper_session(host, image, volume, role=role, writable=True, mount_type=mount_type))
        yield helper, fifo


@contextlib.contextmanager
def staged_target(
    host: DockerHost, image: str, volume: str, *, created: bool, role: str, action: str, mount_type: str = "volume",
    record: WriteRecord | None = None, extra_mounts: tuple = (),
) -> Iterator[StagedTarget]:
    """Yield a StagedTarget on ``volume``; on any exception (Ctrl-C included) undo everything.

    Undo means: the staging directory is removed from an existing volume (its old contents and
    root mtime stay), and a volume that the caller ``created`` for this write is removed once the
    helper that mounts it is gone (also after a commit, when a later step of the caller failed).
    ``record`` (the write's crash record) is told the staging directory's name before it is made.
    """
    discard_later = False
    try:
        with _writer_helper(host, image, volume, role=role, mount_type=mount_type, extra_mounts=extra_mounts) as (helper, fifo):
            target = StagedTarget(
                helper, volume, action, fifo=fifo, fifo_failed=lambda: mark_unavailable(host, image), record=record
            )
            root_mtime = "" if created else target.root_mtime()
            if record is not None:
                record.save(phase="staging", staging=target.staging, root_mtime=root_mtime)
            try:
                yield target
            except BaseException:
                if not created and not target.committed and not target.discard(root_mtime):
                    discard_later = True
                raise
    except BaseException:
        if created:
            remove_volume(host, volume)
        elif discard_later:  # e.g. the helper was killed: clean up once it is gone
            _discard_in_new_helper(host, image, target, root_mtime, mount_type)
        raise


@contextlib.contextmanager
def write_record(host: DockerHost, volume: str, *, action: str, image: str, mount_type: str = "volume") -> Iterator[WriteRecord]:
    """Yield the crash record of a write into ``volume``; it is removed when the block ends."""
    record = WriteRecord(host, volume, action=action, image=image, mount_type=mount_type)
    try:
        yield record
    finally:
        record.remove()


@contextlib.contextmanager
def staged_in_container(session: HelperSession, path: str, *, label: str) -> Iterator[StagedTarget]:
    """Yield a StagedTarget at ``path`` inside a running application container (``session``).

    On any exception before the commit, the staging directory is removed and the root's mtime
    put back; the container's old contents stay.
    """
    target = StagedTarget(session, label, "restore", root=path)
    root_mtime = target.root_mtime()
    try:
        yield target
    except BaseException:
        if not target.committed and not target.discard(root_mtime):
            log.error("could not remove %s from %s", target.staging, label)
        raise


def container_path_empty(session: HelperSession, path: str) -> bool:
    """Return whether ``path`` in the container holds no entries. Raises VolsafeError if it cannot be read."""
    result = session.exec(["sh", "-c", PROBE_SCRIPT.replace(MOUNT_POINT, path)])
    if result.exit_code != 0:
        raise VolsafeError(f"cannot inspect {path} in the container: {result.last_line()}")
    return result.output.strip() == ""
