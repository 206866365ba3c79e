"""``volsafe run``: schedule the config's jobs until SIGTERM or SIGINT."""

from __future__ import annotations

from typing import Callable

from backup.config.schema import Config
from backup.docker.host import DockerHost
from backup.jobs.scheduler import Scheduler


def run_scheduler(config: Config, docker: Callable[[], DockerHost], helper_image: Callable[[], str]) -> None:
    """Run every job on its schedule; return once stopped by SIGTERM or SIGINT (a clean stop).

    ``docker`` and ``helper_image`` are called before each run, so a daemon that is down fails that
    run only. Raises UsageError at start-up if a job's backend cannot be opened.
    """
    Scheduler(config, docker, helper_image).serve()
