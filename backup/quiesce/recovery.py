"""Crash recovery: bring back containers that a dead volsafe stopped or paused, remove its helpers.

Before it stops or pauses anything, volsafe writes a small record file (which containers, which
volume, its own pid and process start time) and fsyncs it; once every container is back, it deletes
the file. A record whose process is gone therefore means volsafe died (``kill -9``, a power cut)
with containers down. Container labels cannot serve: they are fixed when a container is created.

``recover`` runs when a volsafe command first connects to Docker. It restarts (or unpauses) the
recorded containers that are still down, says so on stderr, and removes helper containers whose
volsafe process is dead. It is cheap: one directory listing and one filtered container list.

A write into a volume (restore, migrate) keeps a record too (``WriteRecord``, in ``writes/``): the
volume it is about to create, and the staging directory it is about to fill. After a crash,
``recover`` removes that volume, or that staging directory from an existing volume, and the FIFO
directories (``/tmp/volsafe-io-PID-…``) of dead volsafe processes. So volsafe recognises its own
leftovers by what it recorded, never by a name that a user's file could have too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from backup.docker.host import DockerHost, docker_errors
from backup.errors import NotFoundError, VolsafeError
from backup.docker.helper import LABEL as HELPER_LABEL
from backup.docker.helper import MOUNT_POINT
from backup.docker.locks import VolumeBusy, volume_lock
from backup.private_files import open_private, private_dirs

log = logging.getLogger("volsafe.recovery")

STATE_DIR_ENV = "VOLSAFE_STATE_DIR"


def state_dir() -> Path:
    """Return the directory of quiesce records: ``$VOLSAFE_STATE_DIR``, else
    ``$XDG_STATE_HOME/volsafe/quiesced`` (``~/.local/state/volsafe/quiesced``)."""
    given = os.environ.get(STATE_DIR_ENV)
    if given:
        return Path(given)
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "volsafe" / "quiesced"


def _daemon_key(host: DockerHost) -> str:
    # Docker's daemon IDs look like ABCD:EFGH:…; keep file names portable.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", host.daemon_id or "unknown")


# ---------------------------------------------------------------------------------------------
# Processes


def process_start_time(pid: int) -> str | None:
    """Return the start time of process ``pid`` (clock ticks since boot, from /proc), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) may contain spaces and parentheses: split after its closing ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """Return whether process ``pid`` runs on this host (a zombie counts as dead).

    With ``start_time``, a different process that reuses the pid counts as dead too.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to tell: trust kill(0)
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return False
    return start_time is None or process_start_time(pid) in (None, start_time)


INIT_PID_NAMESPACE = "pid:[4026531836]"  # the kernel's initial pid namespace (PROC_PID_INIT_INO)


def pid_namespace(pid: int | str = "self") -> str | None:
    """Return the pid namespace of process ``pid`` (``pid:[INODE]``), or None if unknown."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_CGROUP_CONTAINER = re.compile(r"(?:^|/)(?:docker-)?([0-9a-f]{64})(?:\.scope)?$")
_HOSTNAME_SOURCE = re.compile(r"/containers/([0-9a-f]{64})/hostname$")
_UPPER_LAYER = re.compile(r"(?:^|,)upperdir=[^,]*/([0-9a-f]{64})/diff(?:,|$)")


@functools.lru_cache(maxsize=None)
def boot_id() -> str | None:
    """Return this boot's random id (the kernel's, shared by every container), or None if unknown."""
    return (_read(BOOT_ID_PATH) or "").strip() or None


def container_identity(cgroup: str | None = None, mountinfo: str | None = None) -> str | None:
    """Return who the Docker container this process runs in is, one value for its whole life
    (across ``docker restart``) and never another container's; None outside a Docker container or
    when unsure. ``cgroup`` and ``mountinfo`` default to /proc/self's.

    - ``docker/ID`` from /proc/self/cgroup, whose leaf is the container's own cgroup
      (``/docker/ID`` with the cgroupfs driver, ``docker-ID.scope`` with systemd; both cgroup v1
      and v2 with the host's cgroup namespace, Docker's default on v1).
    - Else (a private cgroup namespace shows ``/``: Docker's default on cgroup v2)
      ``docker/ID/LAYER`` from /proc/self/mountinfo: ID from the source of /etc/hostname, LAYER
      from the root file system's overlay ``upperdir``. The hostname file alone is not ours with
      ``--network container:X`` (Docker gives X's files then): the writable layer is the
      container's own, kept across restarts. Other storage drivers: None.
    """
    if cgroup is None:
        cgroup = _read("/proc/self/cgroup")
    ids = set()
    for line in (cgroup or "").splitlines():
        path = line.split(":", 2)[-1].strip()
        found = _CGROUP_CONTAINER.search(path)
        if found and "docker" in path:
            ids.add(found.group(1))
    if len(ids) == 1:
        return f"docker/{ids.pop()}"
    if ids:
        return None  # controllers disagree: unsure
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    hostname, layer = None, None
    for line in (mountinfo or "").splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        root, mount_point, fs_type, options = fields[3], fields[4], fields[separator + 1], fields[-1]
        if mount_point == "/etc/hostname" and (source := _HOSTNAME_SOURCE.search(root)):
            hostname = source.group(1)
        elif mount_point == "/" and fs_type == "overlay":
            found = _UPPER_LAYER.search(options)
            layer = found.group(1) if found else None
    return f"docker/{hostname}/{layer}" if hostname and layer else None


@functools.lru_cache(maxsize=None)
def _own_container() -> str | None:
    return container_identity()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def owner_fields() -> dict[str, str | None]:
    """Return what crash recovery needs besides the pid to judge whether this process still runs:
    its pid namespace, the boot and the Docker container it runs in (recorded by every caller)."""
    return {"pid_namespace": pid_namespace(), "boot_id": boot_id(), "container": _own_container()}


def owner_alive(
    pid: int, start_time: str | None = None, namespace: str | None = None, boot: str | None = None, container: str | None = None
) -> bool:
    """Return whether the volsafe process ``pid`` (as its own pid namespace ``namespace`` numbers
    it; ``boot`` and ``container`` as ``owner_fields`` recorded them) runs.

    - Another boot: dead (no process outlives a reboot), where that boot is known to be this
      machine's: the owner ran in our own container, or it and we in the initial pid namespace.
      Elsewhere another boot id proves nothing: a volsafe on another kernel can share the daemon
      (a VM's, or a sandboxed container's), and its boot id differs while it runs.
    - The same pid namespace (or none recorded): looked up by pid.
    - Another pid namespace of the same Docker container: the container was restarted (every
      process of a container dies when it stops, and a restart makes a new namespace), so dead,
      unless a process we can see is in that namespace (one nested in ours).
    - Otherwise volsafe in a container and volsafe on the host share a daemon, records and FIFO
      directories, but not pid numbers: a pid of another namespace is looked up only from the
      initial namespace, which sees every process (by the last ``NSpid`` of each process of that
      namespace); from any other namespace, a process of another one counts as alive.
    Unknown values (old records, no /proc) never make an owner dead."""
    ours_boot = boot_id()
    ours = pid_namespace()
    if boot and ours_boot and boot != ours_boot:
        if (container and container == _own_container()) or (namespace == ours == INIT_PID_NAMESPACE):
            return False
    if not namespace or ours is None or namespace == ours:
        return process_alive(pid, start_time)
    restarted = bool(container) and container == _own_container() and boot == ours_boot and ours_boot is not None
    if ours != INIT_PID_NAMESPACE and not restarted:
        return True
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return True
    unsure = False
    for host_pid in entries:
        try:
            status = Path(f"/proc/{host_pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) < 2 or nspid[-1] != str(pid):
            continue  # not numbered ``pid`` inside a namespace below ours
        seen = pid_namespace(host_pid)
        if seen is None:
            # Reading another process's namespace needs ptrace rights (CAP_SYS_PTRACE for a root
            # process in a container; the systemd unit drops it). Unknown is never dead.
            unsure = True
        elif seen == namespace and process_alive(int(host_pid), start_time):
            return True
    return unsure


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class QuiesceRecord:
    """The record file of one quiesce: written before the first container goes down, removed after all are back."""

    path: Path

    @classmethod
    def new(cls, host: DockerHost, volume: str) -> "QuiesceRecord":
        """Return a record for this process and ``volume`` (nothing is written yet)."""
        name = f"{os.getpid()}-{secrets.token_hex(4)}.json"
        return cls(state_dir() / _daemon_key(host) / name)

    def write(self, volume: str, mode: str, containers: list[tuple[str, str]], action: str = "backup") -> None:
        """Durably record that ``containers`` ([(id, name)], in resume order) are about to be put in ``mode``.

        Raises VolsafeError if the file cannot be written: volsafe must not stop anything it could
        not bring back after a crash.
        """
        data = {
            "pid": os.getpid(),
            "process_start": process_start_time(os.getpid()),
            **owner_fields(),
            "volume": volume,
            "action": action,
            "mode": mode,
            "containers": [{"id": cid, "name": name} for cid, name in containers],
        }
        _write_durably(self.path, data)

    def remove(self) -> None:
        """Delete the record (all its containers are back)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", self.path, exc)


def _write_durably(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically and fsync it. Raises VolsafeError."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        private_dirs(path.parent)  # records name containers to restart and volumes to remove: others must not write them
        with os.fdopen(open_private(temporary, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise VolsafeError(f"cannot write the crash-recovery record {path}: {exc.strerror or exc}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


WRITES_DIR = "writes"


class WriteRecord:
    """The crash record of one write into a volume (or a host directory, ``mount_type`` "bind").

    Saved before each step that leaves something behind if volsafe dies there: ``phase`` "create"
    (with ``created``) before the volume is created, "staging" (with ``staging``, the staging
    directory's name) before that directory is made, "commit" before the staged tree is swapped in.
    Removed when the write is over, whichever way. A record that cannot be written is a warning,
    not a failure: a leftover then just counts as the volume's content.
    """

    def __init__(self, host: DockerHost, volume: str, *, action: str, image: str, mount_type: str = "volume"):
        self.path = state_dir() / _daemon_key(host) / WRITES_DIR / f"{os.getpid()}-{secrets.token_hex(4)}.json"
        self.data: dict = {
            "pid": os.getpid(),
            "process_start": process_start_time(os.getpid()),
            **owner_fields(),
            "volume": volume,
            "mount_type": mount_type,
            "action": action,
            "image": image,
            "phase": "start",
            "created": False,
        }
        self.saved = False
        self.broken = False

    def save(self, **changes) -> None:
        """Record ``changes`` durably (a warning, once, if that fails)."""
        self.data.update(changes)
        if self.broken:
            return
        try:
            _write_durably(self.path, self.data)
            self.saved = True
        except VolsafeError as exc:
            self.broken = True
            log.warning("%s; a crash now would leave the %s's leftovers in %s", exc, self.data["action"], self.data["volume"])

    def remove(self) -> None:
        if self.saved:
            QuiesceRecord(self.path).remove()


# ---------------------------------------------------------------------------------------------
# Recovery


def recover(host: DockerHost) -> list[str]:
    """Resume containers left down by dead volsafe processes and remove their helpers on this daemon;
    undo their unfinished writes (``WriteRecord``) and remove their FIFO directories.

    Returns what was done, one line each (also logged as warnings). Never raises for a single
    container; raises VolsafeError only if the daemon cannot be asked at all.
    """
    done = _resume_abandoned(host)
    done += _remove_orphan_helpers(host)
    done += _undo_abandoned_writes(host)
    done += _remove_stale_fifo_dirs()
    return done


def _claimed_records(directory: Path) -> Iterator[tuple[Path, Path, dict]]:
    """Yield (path, claimed path, data) for each record in ``directory`` whose process is dead,
    claimed first (renamed atomically, so that two volsafe commands starting at once never both act
    on one). The caller removes the claimed file, or renames it back to leave it for next time."""
    try:
        candidates = sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot read crash-recovery records in %s: %s", directory, exc)
        return
    for path in candidates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            pid = int(data.get("pid") or 0)
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # vanished meanwhile (its owner finished), or half-written by a crash before the rename
        if owner_alive(pid, data.get("process_start"), data.get("pid_namespace"), data.get("boot_id"), data.get("container")):
            continue
        claimed = path.with_name(f".{path.name}.claimed-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except OSError:
            continue
        yield path, claimed, data


def _resume_abandoned(host: DockerHost) -> list[str]:
    done: list[str] = []
    for path, claimed, data in _claimed_records(state_dir() / _daemon_key(host)):
        failed = False
        for entry in data.get("containers") or ():
            try:
                line = _resume_one(host, entry["id"], entry.get("name") or entry["id"][:12], data)
            except VolsafeError as exc:
                failed = True
                log.error("could not bring back container %s after an interrupted volsafe: %s", entry.get("name"), exc)
                continue
            if line:
                log.warning("%s", line)
                done.append(line)
        if failed:
            os.rename(claimed, path)  # try again next time
        else:
            QuiesceRecord(claimed).remove()
    return done


def _resume_one(host: DockerHost, container_id: str, name: str, record: dict) -> str | None:
    """Restart or unpause one recorded container if it is still down; return what was done, or None."""
    why = f"volsafe (pid {record.get('pid')}) {'stopped' if record.get('mode') == 'stop' else 'paused'} it for the {record.get('action') or 'backup'} of {record.get('volume')!r} and did not finish"
    try:
        with docker_errors(host):
            state = host.api.inspect_container(container_id)["State"]
            if record.get("mode") == "pause":
                if state.get("Paused"):
                    host.api.unpause(container_id)
                    return f"unpaused container {name}: {why}"
            elif not state.get("Running"):
                host.api.start(container_id)
                return f"restarted container {name}: {why}"
    except NotFoundError:
        return None  # removed meanwhile: nothing to bring back
    return None


def _remove_orphan_helpers(host: DockerHost) -> list[str]:
    """Remove helper containers whose volsafe process is dead. Only for a daemon on this host:
    a pid from another machine says nothing here."""
    if not host.url.startswith("unix://"):
        return []
    with docker_errors(host):
        helpers = host.api.containers(all=True, filters={"label": f"{HELPER_LABEL}=true"})
    done = []
    for helper in helpers:
        labels = helper.get("Labels") or {}
        pid = labels.get("io.volsafe.pid", "")
        if not pid.isdigit() or owner_alive(
            int(pid), None, labels.get("io.volsafe.pidns"), labels.get("io.volsafe.boot"), labels.get("io.volsafe.container")
        ):
            continue
        try:
            with docker_errors(host):
                host.api.remove_container(helper["Id"], force=True)
        except NotFoundError:
            continue
        except VolsafeError as exc:
            log.warning("could not remove orphaned helper container %s: %s", helper["Id"][:12], exc)
            continue
        name = (helper.get("Names") or ["/" + helper["Id"][:12]])[0].lstrip("/")
        line = f"removed helper container {name} of an interrupted volsafe (pid {pid})"
        log.warning("%s", line)
        done.append(line)
    return done


# ---------------------------------------------------------------------------------------------
# Unfinished writes

_STAGING_NAME = re.compile(r"^\.volsafe-restore-[0-9a-f]{12}$")
_DOCKER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _undo_abandoned_writes(host: DockerHost) -> list[str]:
    """Undo the recorded writes of dead volsafe processes on this daemon; return what was done."""
    done: list[str] = []
    for path, claimed, data in _claimed_records(state_dir() / _daemon_key(host) / WRITES_DIR):
        try:
            line = _undo_write(host, data)
        except VolumeBusy:
            os.rename(claimed, path)  # another volsafe works on the volume now: next time
            continue
        except VolsafeError as exc:
            log.error("could not clean up after an interrupted volsafe %s of %s: %s", data.get("action"), data.get("volume"), exc)
            os.rename(claimed, path)  # try again next time
            continue
        QuiesceRecord(claimed).remove()
        if line:
            log.warning("%s", line)
            done.append(line)
    return done


def _undo_write(host: DockerHost, data: dict) -> str | None:
    """Undo one dead process's write: remove the volume it created, or the staging directory it
    left in an existing volume. Return what was done, or None. Raises VolsafeError (VolumeBusy)."""
    volume = str(data.get("volume") or "")
    mount_type = data.get("mount_type") or "volume"
    if not volume or mount_type not in ("volume", "bind"):
        return None
    who = f"an interrupted volsafe {data.get('action') or 'restore'} (pid {data.get('pid')})"
    lock = volume_lock(host, volume, action="crash recovery", wait=0) if mount_type == "volume" else contextlib.nullcontext()
    with lock:
        if data.get("created") and mount_type == "volume":
            return _remove_created_volume(host, volume, data, who)
        staging = str(data.get("staging") or "")
        if not _STAGING_NAME.match(staging):
            return None
        if data.get("phase") == "commit":
            old = ".volsafe-old-" + staging.rpartition("-")[2]
            return (
                f"{who} was swapping new data into {volume} when it stopped: it may hold part of the new data, "
                f"and its old contents may be in {old}; restore it again (with --force)"
            )
        if data.get("phase") != "staging":
            return None
        _discard_staging(host, volume, mount_type, staging, str(data.get("root_mtime") or ""), str(data.get("image") or ""))
        return f"removed {staging} that {who} left in {volume}"


def _remove_created_volume(host: DockerHost, volume: str, data: dict, who: str) -> str | None:
    """Remove ``volume`` if it is the one the dead process created and no container uses it;
    return what was done. Raises VolsafeError.

    Docker gives a volume no identity beyond its name, so "the one it created" means: made since
    the recorded daemon time (the local driver's CreatedAt only moves forward), and, unless the
    process died while swapping data in, holding nothing but the recorded staging directory.
    """
    try:
        info = host.volume(volume)
    except NotFoundError:
        return None
    created, since = _docker_time(info.get("CreatedAt")), _docker_time(data.get("daemon_time"))
    if created is None or since is None or created < since:
        return None  # older than the write: not the volume it created
    with docker_errors(host):
        users = host.api.containers(all=True, filters={"volume": volume})
    others = [c for c in users if (c.get("Labels") or {}).get(HELPER_LABEL) != "true"]
    if others:
        names = ", ".join((c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/") for c in others)
        return f"left volume {volume}, which {who} created and did not finish, because container {names} uses it"
    if data.get("phase") != "commit":
        from backup.docker.helper import run_helper

        listing = run_helper(
            host, str(data.get("image") or ""), volume, ["ls", "-A", MOUNT_POINT], role="probe", writable=False
        )
        if listing.exit_code != 0:
            raise VolsafeError(f"cannot inspect volume {volume!r}: {listing.last_line()}")
        foreign = set(listing.output.split()) - {str(data.get("staging") or "")}
        if foreign:
            return f"left volume {volume}, which {who} created and did not finish, because it holds data that volsafe did not write"
    with docker_errors(host):
        host.api.remove_volume(volume)
    return f"removed volume {volume}, which {who} created and did not finish"


def _discard_staging(host: DockerHost, volume: str, mount_type: str, staging: str, root_mtime: str, image: str) -> None:
    """Remove the staging directory from the volume (putting back its root's mtime). Raises VolsafeError."""
    from backup.docker.helper import run_helper

    script = f'rm -rf "{MOUNT_POINT}/$1"' + (f' && touch -c -d "@$2" {MOUNT_POINT}' if root_mtime.isdigit() else "")
    result = run_helper(
        host, image, volume, ["sh", "-c", script, "sh", staging, root_mtime], role="cleanup", writable=True, mount_type=mount_type
    )
    if result.exit_code != 0:
        raise VolsafeError(f"removing {staging}: {result.last_line()}")


def _docker_time(text) -> datetime | None:
    """Return the aware datetime (to the second) of a Docker RFC 3339 time, or None."""
    found = _DOCKER_TIME.match(text) if isinstance(text, str) else None
    if not found:
        return None
    zone = "+00:00" if found.group(2) == "Z" else found.group(2)
    return datetime.fromisoformat(found.group(1) + zone)


def _fifo_dir_owner_fields(path: str) -> tuple[str | None, str | None, str | None]:
    """Return the (pid namespace, boot id, container) recorded in the FIFO directory ``path``
    (None for what a directory from before does not hold)."""
    from backup.docker.fifo import NAMESPACE_NAME, OWNER_NAME

    try:
        namespace = Path(path, NAMESPACE_NAME).read_text().strip() or None
    except OSError:
        namespace = None
    try:
        owner = json.loads(Path(path, OWNER_NAME).read_text())
        return namespace, str(owner.get("boot_id") or "") or None, str(owner.get("container") or "") or None
    except (OSError, ValueError, AttributeError):
        return namespace, None, None


def _remove_stale_fifo_dirs() -> list[str]:
    """Remove this user's FIFO directories (``host_fifo``) whose volsafe process is dead. Quietly:
    they hold no data, only an empty FIFO and an errors file."""
    from backup.docker.fifo import fifo_dir_owner

    root = tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        owner = fifo_dir_owner(entry.name)
        if owner is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or owner_alive(*owner, *_fifo_dir_owner_fields(entry.path)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        log.debug("removed %s of a dead volsafe process", entry.path)
    return []
