"""Notifications through apprise (e-mail, Slack, Discord, Telegram, ntfy, Gotify, Teams, JSON, ...).

The config's ``[notify.NAME]`` routes say which events go to which apprise URLs: ``failure`` (a
job's backup run failed), ``verify_failure`` (a job's scheduled verify failed), ``stale`` (``status
--notify`` found a host and volume without a recent backup) and ``success`` (a job's run
succeeded). An interrupted run (SIGTERM/SIGINT) sends nothing. The generic JSON webhook of
``[health]`` is separate and unchanged.

apprise is imported only when something is sent: it is large, and most commands never notify.
Sending never raises: a notification that fails is a warning on the log, never a failed job.
"""

from __future__ import annotations

import logging
from typing import Iterable

from backup.units import human_size

log = logging.getLogger("volsafe.notify")
VERIFY_SUFFIX = ":verify"  # as backup.actions.verify names a job's verify runs (not imported: it is heavy)


def urls_for(config, event: str, job: str | None = None) -> list[str]:
    """Return the URLs of every [notify.*] route that takes ``event`` (of ``job``), each once, in config order."""
    found: list[str] = []
    for route in config.notify.values():
        if event not in route.events:
            continue
        if job is not None and route.jobs and job not in route.jobs:
            continue
        found += [u for u in route.urls if u not in found]
    return found


def _where(url: str) -> str:
    """Return a URL's scheme and host only, for a log line (the rest may hold a token)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1].split("?", 1)[0]
    return f"{scheme}://{host}"


def send(urls: Iterable[str], title: str, body: str, *, failure: bool = True) -> bool:
    """Send one message to every URL with apprise; return whether every one was delivered. Never raises."""
    urls = list(urls)
    if not urls:
        return True
    try:
        import apprise  # late: only when there is something to send
    except ImportError:
        log.warning("cannot send notifications: the apprise package is not installed (pip install apprise)")
        return False
    try:
        sender = apprise.Apprise()
        usable = 0
        for url in urls:
            if sender.add(url):
                usable += 1
            else:
                log.warning("notification URL %s... is not one apprise understands; skipped", _where(url))
        if not usable:
            return False
        kind = apprise.NotifyType.FAILURE if failure else apprise.NotifyType.SUCCESS
        delivered = bool(sender.notify(title=title, body=body, notify_type=kind))
    except Exception as exc:  # a plugin's own error: the job's outcome stands
        log.warning("notification failed: %s", exc)
        return False
    if not delivered:
        log.warning("a notification to %s was not delivered (see apprise's log with --debug)", ", ".join(_where(u) for u in urls))
    return delivered and usable == len(urls)


def run_event(summary: dict) -> str | None:
    """Return the event a job run's summary is (``failure``, ``verify_failure``, ``success``), or None (interrupted)."""
    result = summary.get("result")
    if result == "success":
        return "success"
    if result == "failure":
        return "verify_failure" if summary["job"].endswith(VERIFY_SUFFIX) else "failure"
    return None


def run_message(summary: dict, sizes: dict[str, int] | None = None) -> tuple[str, str]:
    """Return (title, body) for a job run: job, host, result, volumes with their stored sizes, and the error line."""
    job, host = summary["job"], summary.get("host") or "(unknown host)"
    verify = job.endswith(VERIFY_SUFFIX)
    what = f"verify of job {job.removesuffix(VERIFY_SUFFIX)}" if verify else f"job {job}"
    title = f"volsafe: {what} {'succeeded' if summary['result'] == 'success' else 'failed'} on {host}"
    sizes = sizes or {}
    volumes = ", ".join(f"{v} ({human_size(sizes[v])})" if v in sizes else v for v in summary.get("volumes") or []) or "-"
    lines = [
        f"job: {job}",
        f"host: {host}",
        f"result: {summary['result']}",
        f"volumes: {volumes}",
        f"{'checked' if verify else 'stored'}: {human_size(summary.get('bytes') or 0)} to {', '.join(summary.get('backends') or []) or '-'}",
        f"duration: {summary.get('duration_seconds', 0):.1f}s",
    ]
    if summary.get("pruned"):
        lines.append(f"pruned: {summary['pruned']} backup(s)")
    errors = summary.get("errors") or []
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        lines.append(f"error: {errors[0]}{more}")
    return title, "\n".join(lines)


def notify_run(config, summary: dict, sizes: dict[str, int] | None = None) -> bool | None:
    """Send a job run's event to the routes that take it; return whether it was delivered (None: no route). Never raises."""
    event = run_event(summary)
    if event is None:
        return None
    urls = urls_for(config, event, summary["job"].removesuffix(VERIFY_SUFFIX))
    if not urls:
        return None
    title, body = run_message(summary, sizes)
    return send(urls, title, body, failure=event != "success")


def notify_stale(config, rows, *, max_age: str, where: str) -> bool | None:
    """Send the ``stale`` event for ``rows`` (``backup.actions.status.FleetRow``) to the routes that take it."""
    urls = urls_for(config, "stale")
    if not urls:
        return None
    from backup.actions.overview import human_age

    hosts = sorted({r.host or "(unrecorded)" for r in rows})
    title = f"volsafe: {len(rows)} volume(s) on {', '.join(hosts)} without a backup newer than {max_age}"
    lines = [f"store: {where}"] + [
        f"host {r.host or '(unrecorded)'}: volume {r.volume}: newest {r.newest.backup_id}, {human_age(r.age_seconds)} old, "
        f"{r.count} backup(s), {human_size(r.stored_bytes)} stored"
        for r in rows
    ]
    return send(urls, title, "\n".join(lines))
