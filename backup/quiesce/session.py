"""One quiesce: the object that backup, restore, migrate and jobs use to hold an application still.

A ``QuiesceSession`` covers a set of volumes (all those of one run, or one volume with
``--quiesce-each``). It owns every part of quiescing, in this order:

1. ``survey``: ask Docker which containers mount any of the volumes, decide what to stop or pause
   and in which order (``plan``, pure) and which hooks run (``hooks``). Read-only: ``--dry-run``
   prints exactly this.
2. ``start``: the pre-hooks (each container's once), then the crash record (``recovery``) and the
   stops or pauses (``containers``), dependents first.
3. ``volume_done(name)`` for each volume as soon as it is read (or failed): when the last one is,
   the session finishes early, so the application is back while uploads' tails are still written.
4. ``finish``: bring the containers back in reverse order, drop the record, run the post-hooks;
   once, and on every path (the context manager calls it for errors, Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Iterable

from backup.docker.host import DockerHost
from backup.quiesce.containers import Quiescer, containers_using
from backup.quiesce.hooks import HookRun, HookSpec, hooks_from_labels
from backup.quiesce.plan import AppContainer, Plan, plan_quiesce

log = logging.getLogger("volsafe.quiesce")

CLI_ADVICE = "use --stop or --pause"


def job_advice(job: str) -> str:
    """Return the crash-consistency advice for a job: its config keys, not CLI flags."""
    return f"set stop_containers or pause_containers in job {job!r}"


@dataclass(frozen=True)
class Survey:
    """What a session would do, from Docker's container list: nothing is changed to find it out."""

    volumes: tuple[str, ...]
    users: tuple[AppContainer, ...]  # every container mounting any of the volumes, any state
    plan: Plan
    hooks: tuple[HookSpec, ...] = field(default_factory=tuple)


class QuiesceSession:
    """The quiesce of the applications using ``volumes`` for one ``action`` ("backup", "restore", "migration").

    ``mode`` is "none", "stop" or "pause" (see ``backup.quiesce.plan`` for what each takes down);
    ``hooks`` run besides those declared by container labels (with ``label_hooks``); ``advice`` ends
    the crash-consistency warning (CLI flags or a job's keys). Problems bringing things back are in
    ``problems``.
    """

    def __init__(
        self, host: DockerHost, volumes: Iterable[str], *, mode: str = "none", hooks: Iterable[HookSpec] = (),
        action: str = "backup", advice: str = CLI_ADVICE, label_hooks: bool = True,
    ):
        self.host = host
        self.volumes = tuple(dict.fromkeys(volumes))
        self.mode = mode
        self.extra_hooks = tuple(hooks)
        self.action = action
        self.advice = advice
        self.label_hooks = label_hooks  # run the hooks that containers declare with labels (backups only)
        self.quiescer: Quiescer | None = None
        self.hooks: HookRun | None = None
        self.problems: list[str] = []  # containers not brought back, failed post-hooks
        self._claimed = 0
        self.started = False
        self.finished = False
        self._pending = set(self.volumes)
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return ", ".join(self.volumes)

    def survey(self) -> Survey:
        """Return what ``start`` would do. Raises VolsafeError (the daemon, an invalid hook label, a bad mode)."""
        users = containers_using(self.host, self.volumes)
        plan = plan_quiesce(users, self.mode)
        specs = list(self.extra_hooks)
        for container in sorted(users, key=lambda c: c.name) if self.label_hooks else ():
            if container.running:
                spec = hooks_from_labels(container.name, container.labels)
                if spec is not None:
                    specs.append(spec)
        return Survey(self.volumes, tuple(users), plan, tuple(specs))

    def start(self) -> None:
        """Run the pre-hooks, then stop or pause the containers. Raises VolsafeError (HookFailed…);
        call ``finish`` anyway (the context manager does)."""
        self.started = True
        survey = self.survey()
        self.hooks = HookRun(self.host, survey.hooks, self.label)
        self.quiescer = Quiescer(self.host, self.label, survey.plan, action=self.action)
        self.hooks.pre()
        self._warn_if_left_writing(survey.plan)
        self.quiescer.quiesce()

    def _warn_if_left_writing(self, plan: Plan) -> None:
        """Warn about running writers that are not quiesced, unless a pre-hook made the data consistent
        (a job's hook, or the writer's own label hook, that ran and exited 0)."""
        succeeded = self.hooks.succeeded if self.hooks is not None else []
        if self.action != "backup" or not plan.left_writing or any(not s.source.startswith("labels of") for s in succeeded):
            return
        hooked = {s.container for s in succeeded}
        writers = [c.name for c in plan.left_writing if c.name not in hooked]
        if writers:
            log.warning(
                "volume %s is mounted read-write by running container(s) %s: the backup is only crash-consistent (%s)",
                self.label, ", ".join(writers), self.advice,
            )

    def volume_done(self, volume: str) -> None:
        """Note that ``volume`` is read (or failed); after the last one, ``finish``. Thread-safe."""
        with self._lock:
            self._pending.discard(volume)
            last = not self._pending
        if last:
            self.finish()

    def finish(self, restart: bool = True) -> list[str]:
        """Bring the containers back (reverse order) and run the post-hooks; once. Never raises VolsafeError.

        With ``restart`` False (a migration's cut-over) stopped containers stay stopped: only the
        crash record is dropped. Returns the names left down that way.
        """
        with self._lock:
            if self.finished:
                return []
            self.finished = True
        left: list[str] = []
        if self.quiescer is not None:
            if not restart:
                left = [c.name for c in self.quiescer.down]
                self.quiescer.down.clear()  # resume() then only drops the record
            self.problems += self.quiescer.resume()
        if self.hooks is not None:
            self.problems += self.hooks.post()
        return left

    def claim_problems(self) -> list[str]:
        """Return the problems not claimed before (once the session is finished), so that exactly one
        outcome reports each."""
        with self._lock:
            if not self.finished:
                return []
            new = self.problems[self._claimed:]
            self._claimed = len(self.problems)
            return new

    def __enter__(self) -> "QuiesceSession":
        try:
            self.start()
        except BaseException:
            self._fail()
            raise
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            self._fail()
        else:
            self.finish()

    def _fail(self) -> None:
        """Finish after a failure and log the problems (the caller only sees its own exception)."""
        self.finish()
        for problem in self.problems:
            log.error("%s", problem)


def label_hooks_among(host: DockerHost, volumes: Iterable[str]) -> list[str]:
    """Return the names of running containers, mounting any of ``volumes``, that declare hooks with
    labels (volsafe.hook.pre / .post). Raises VolsafeError if the daemon cannot be asked."""
    return sorted(
        c.name for c in containers_using(host, list(volumes)) if c.running and any(key.startswith("volsafe.hook.") for key in c.labels)
    )
