"""The Docker side of quiescing: find the containers that mount a volume, stop or pause them, bring them back.

What to do and in which order is decided by ``backup.quiesce.plan`` (pure); this module only carries it
out, recording it first for crash recovery (``backup.quiesce.recovery``).
"""

from __future__ import annotations

import logging
from typing import Iterable

from backup.docker.host import DockerHost, docker_errors
from backup.errors import NotFoundError, VolsafeError
from backup.docker.helper import LABEL as HELPER_LABEL
from backup.quiesce.plan import AppContainer, Plan, from_listing
from backup.quiesce.recovery import QuiesceRecord

log = logging.getLogger("volsafe.quiesce")


def containers_using(host: DockerHost, volume: str | Iterable[str]) -> list[AppContainer]:
    """Return the containers (any state, helpers excluded) that mount ``volume`` (or any of several
    volumes: each container once). Raises VolsafeError."""
    names = [volume] if isinstance(volume, str) else sorted(set(volume))
    if not names:
        return []
    with docker_errors(host):
        listing = host.api.containers(all=True, filters={"volume": names})  # several values: any of them
    found = []
    for entry in listing:
        if (entry.get("Labels") or {}).get(HELPER_LABEL) == "true":
            continue
        container = from_listing(entry, names)
        if container is not None:
            found.append(container)
    return found


class Quiescer:
    """Carries out a Plan: ``quiesce`` stops or pauses, ``resume`` brings back, in reverse order.

    ``resume`` is idempotent and safe to call after a partial ``quiesce``: it brings back exactly
    the containers that went down.
    """

    def __init__(self, host: DockerHost, volume: str, plan: Plan, action: str = "backup"):
        self.host = host
        self.volume = volume  # the volume, or several as "a, b": for messages and the record
        self.action = action
        self.plan = plan
        self.down: list[AppContainer] = []  # in the order they went down
        self.record = QuiesceRecord.new(host, volume)
        self.recorded = False

    def quiesce(self) -> None:
        """Stop or pause the plan's containers in order. Raises VolsafeError (call ``resume`` anyway)."""
        if self.plan.mode == "none" or not self.plan.order:
            return
        # Written (and fsync'd) before anything goes down: a crash from here on is recoverable.
        self.record.write(self.volume, self.plan.mode, [(c.id, c.name) for c in self.plan.resume_order], action=self.action)
        self.recorded = True
        for container in self.plan.order:
            # Counted as down before the call: a stop cut short by Ctrl-C may still take effect.
            self.down.append(container)
            with docker_errors(self.host):
                if self.plan.mode == "pause":
                    self.host.api.pause(container.id)
                else:
                    self.host.api.stop(container.id)  # the container's own stop timeout applies
            log.info(
                "%s container %s for the %s of %s", "paused" if self.plan.mode == "pause" else "stopped", container.name, self.action, self.volume
            )

    def resume(self) -> list[str]:
        """Start or unpause what ``quiesce`` took down, last one first; return one line per failure."""
        problems = []
        while self.down:
            container = self.down[-1]
            try:
                with docker_errors(self.host):
                    if self.plan.mode == "pause":
                        self.host.api.unpause(container.id)
                    else:
                        self.host.api.start(container.id)
                log.info("%s container %s", "unpaused" if self.plan.mode == "pause" else "restarted", container.name)
            except NotFoundError:
                log.warning("container %s disappeared while volsafe had it %s", container.name, "paused" if self.plan.mode == "pause" else "stopped")
            except VolsafeError as exc:
                if self.plan.mode == "pause" and not self._paused(container):
                    self.down.pop()  # its pause never took effect: nothing to undo
                    continue
                problems.append(f"could not {'unpause' if self.plan.mode == 'pause' else 'restart'} container {container.name}: {exc}")
            self.down.pop()
        if self.recorded and not problems:
            # Kept when something failed: the next volsafe command tries again, and says so.
            self.record.remove()
            self.recorded = False
        return problems

    def _paused(self, container: AppContainer) -> bool:
        """Return whether ``container`` is paused; True when that cannot be told (the safe answer)."""
        try:
            with docker_errors(self.host):
                return bool(self.host.api.inspect_container(container.id)["State"].get("Paused"))
        except VolsafeError:
            return True
