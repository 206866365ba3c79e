"""A consistent source for one volume's backup: pre-hooks, then stop or pause its containers; afterwards
bring them back and run the post-hooks, on every path.

``backup_volume`` calls ``session.finish()`` as soon as Docker's archive stream ends, so the
application is back while the upload's tail is still being written; the context exit calls it
again (a no-op then) for every other path: errors, Ctrl-C, SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterable, Iterator

from backup.quiesce.containers import Quiescer, containers_using
from backup.docker.host import DockerHost
from backup.quiesce.hooks import HookRun, HookSpec, hooks_from_labels
from backup.quiesce.plan import plan_quiesce

log = logging.getLogger("volsafe.quiesce")


class QuiesceSession:
    """What was done to quiesce a volume, and how to undo it (``finish``)."""

    def __init__(self, host: DockerHost, volume: str):
        self.host = host
        self.volume = volume
        self.quiescer: Quiescer | None = None
        self.hooks: HookRun | None = None
        self.problems: list[str] = []  # containers not brought back, failed post-hooks
        self.finished = False

    def start(self, mode: str, extra_hooks: Iterable[HookSpec]) -> None:
        """Run the pre-hooks, then stop or pause the containers. Raises VolsafeError (HookFailed…)."""
        users = containers_using(self.host, self.volume)
        plan = plan_quiesce(users, mode)
        if plan.left_writing:
            names = ", ".join(c.name for c in plan.left_writing)
            log.warning(
                "volume %s is mounted read-write by running container(s) %s: the backup is only crash-consistent "
                "(use --stop or --pause)", self.volume, names,
            )
        specs = list(extra_hooks)
        for container in sorted(users, key=lambda c: c.name):
            if container.running:
                spec = hooks_from_labels(container.name, container.labels)
                if spec is not None:
                    specs.append(spec)
        self.hooks = HookRun(self.host, specs, self.volume)
        self.quiescer = Quiescer(self.host, self.volume, plan)
        self.hooks.pre()
        self.quiescer.quiesce()

    def finish(self) -> None:
        """Bring the containers back (reverse order), then run the post-hooks; once. Never raises VolsafeError."""
        if self.finished:
            return
        self.finished = True
        if self.quiescer is not None:
            self.problems += self.quiescer.resume()
        if self.hooks is not None:
            self.problems += self.hooks.post()


def label_hooks_among(host: DockerHost, volumes: Iterable[str]) -> list[str]:
    """Return the names of running containers, mounting any of ``volumes``, that declare hooks with
    labels (volsafe.hook.pre / .post). Raises VolsafeError if the daemon cannot be asked."""
    found = set()
    for volume in volumes:
        for container in containers_using(host, volume):
            if container.running and any(key.startswith("volsafe.hook.") for key in container.labels):
                found.add(container.name)
    return sorted(found)


@contextlib.contextmanager
def quiesced(host: DockerHost, volume: str, *, mode: str, hooks: Iterable[HookSpec] = ()) -> Iterator[QuiesceSession]:
    """Yield a session in which ``volume``'s containers are quiesced (``mode``: none, stop or pause).

    On exit, on every path, they are brought back and the post-hooks run. Problems doing so are in
    ``session.problems``; when the block raised, they are logged as errors too (the caller will only
    see its own exception). Raises HookFailed for an aborting pre-hook, VolsafeError if a container
    cannot be stopped or paused (what went down is brought back first).
    """
    session = QuiesceSession(host, volume)
    try:
        session.start(mode, hooks)
        yield session
    except BaseException:
        session.finish()
        for problem in session.problems:
            log.error("%s", problem)
        raise
    session.finish()
