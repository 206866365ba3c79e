"""``volsafe run``: the long-running scheduler."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

import typer

from backup.cli.options import command
from backup.cli.logsafe import guard
from backup.errors import UsageError

_LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a run's fields when it has them."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(log_format: str, debug: bool) -> None:
    """Log at INFO (one line per run, start and stop) in text or JSON, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s volsafe: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        for noisy in ("apscheduler", "botocore", "boto3", "urllib3", "docker", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING if noisy == "apscheduler" else logging.ERROR)
    guard(handler, debug)  # no credentials in logs, even with --debug


def run(
    ctx: typer.Context,
    log_format: str = typer.Option("text", "--log-format", metavar="FORMAT", help="Log format on stderr: text or json."),
) -> None:
    """Run the configured jobs on their schedules until SIGTERM or SIGINT (then exit 0).

    Jobs run one at a time: a job never overlaps with itself and two jobs never touch the same
    volume at once. On SIGTERM/SIGINT nothing new starts; a running backup may finish within
    [scheduler] stop_timeout, else it is aborted cleanly. A second signal aborts at once.
    """
    if log_format not in _LOG_FORMATS:
        raise UsageError(f"--log-format must be text or json, not {log_format!r}")
    state = ctx.obj
    cfg = state.config
    _setup_logging(log_format, state.debug)
    if cfg.path is None:
        logging.getLogger("volsafe.scheduler").warning("no config file found: no jobs to run (see 'volsafe config check')")
    from backup.actions.run import run_scheduler  # APScheduler: imported only by the command that runs it

    run_scheduler(cfg, lambda: state.docker, lambda: state.helper_image)


def register(app: typer.Typer) -> None:
    command(app, "run")(run)
