"""Crash recovery: bring back containers that a dead volsafe stopped or paused, remove its helpers.

Before it stops or pauses anything, volsafe writes a small record file (which containers, which
volume, its own pid and process start time) and fsyncs it; once every container is back, it deletes
the file. A record whose process is gone therefore means volsafe died (``kill -9``, a power cut)
with containers down. Container labels cannot serve: they are fixed when a container is created.

``recover`` runs when a volsafe command first connects to Docker. It restarts (or unpauses) the
recorded containers that are still down, says so on stderr, and removes helper containers whose
volsafe process is dead. It is cheap: one directory listing and one filtered container list.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from backup.docker_host import DockerHost, docker_errors
from backup.errors import NotFoundError, VolsafeError
from backup.helper import LABEL as HELPER_LABEL
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

    def write(self, volume: str, mode: str, containers: list[tuple[str, str]]) -> None:
        """Durably record that ``containers`` ([(id, name)], in resume order) are about to be put in ``mode``.

        Raises VolsafeError if the file cannot be written: volsafe must not stop anything it could
        not bring back after a crash.
        """
        data = {
            "pid": os.getpid(),
            "process_start": process_start_time(os.getpid()),
            "volume": volume,
            "mode": mode,
            "containers": [{"id": cid, "name": name} for cid, name in containers],
        }
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            private_dirs(self.path.parent)  # records name containers to restart: others must not write them
            with os.fdopen(open_private(temporary, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as out:
                json.dump(data, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise VolsafeError(f"cannot write the crash-recovery record {self.path}: {exc.strerror or exc}") from None

    def remove(self) -> None:
        """Delete the record (all its containers are back)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", self.path, exc)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Recovery


def recover(host: DockerHost) -> list[str]:
    """Resume containers left down by dead volsafe processes and remove their helpers on this daemon.

    Returns what was done, one line each (also logged as warnings). Never raises for a single
    container; raises VolsafeError only if the daemon cannot be asked at all.
    """
    done = _resume_abandoned(host)
    done += _remove_orphan_helpers(host)
    return done


def _resume_abandoned(host: DockerHost) -> list[str]:
    directory = state_dir() / _daemon_key(host)
    try:
        candidates = sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read crash-recovery records in %s: %s", directory, exc)
        return []
    done: list[str] = []
    for path in candidates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # vanished meanwhile (its owner finished), or half-written by a crash before the rename
        if process_alive(int(data.get("pid") or 0), data.get("process_start")):
            continue
        # Claim it atomically, so that two volsafe commands starting at once do not both act on it.
        claimed = path.with_name(f".{path.name}.claimed-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except OSError:
            continue
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
    why = f"volsafe (pid {record.get('pid')}) {'stopped' if record.get('mode') == 'stop' else 'paused'} it to back up volume {record.get('volume')!r} and did not finish"
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
        if not pid.isdigit() or process_alive(int(pid)):
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
