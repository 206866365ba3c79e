"""Health: the status file, Prometheus metrics, the optional HTTP endpoint, and the webhook.

The status file is the one source of truth: every run (scheduled or ``jobs run``) records its
outcome there, and the endpoint and ``jobs list`` read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Iterator

from backup.manifest import parse_time
from backup.private_files import open_private, private_dirs, write_private

log = logging.getLogger("volsafe.health")
FORMAT = "volsafe-status"


class StatusStore:
    """The JSON status file: per job, its last run, last success and last failure, and counters."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # ``volsafe run`` and ``volsafe jobs run`` may record at the same time.
        private_dirs(self.path.parent)
        with os.fdopen(open_private(self.path.with_name(self.path.name + ".lock"), os.O_WRONLY | os.O_APPEND), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def read(self) -> dict:
        """Return ``{job: record}``; an absent or unreadable file reads as no jobs."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable status file %s: %s", self.path, exc)
            return {}
        jobs = data.get("jobs") if isinstance(data, dict) else None
        return jobs if isinstance(jobs, dict) else {}

    def record(self, summary: dict) -> dict:
        """Store one run's summary (``JobOutcome.summary()``); return the job's updated record."""
        with self._locked():
            jobs = self.read()
            entry = jobs.setdefault(summary["job"], {})
            entry["last_run"] = summary
            entry["runs"] = int(entry.get("runs", 0)) + 1
            if summary["result"] == "success":
                entry["last_success"] = summary
            else:
                entry["last_failure"] = summary
                entry["failures"] = int(entry.get("failures", 0)) + 1
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            write_private(tmp, (json.dumps({"format": FORMAT, "jobs": jobs}, indent=2) + "\n").encode())
            os.replace(tmp, self.path)  # readers see the old file or the new one, never half of one
            return entry


def _timestamp(summary: dict | None) -> float | None:
    if not summary or not summary.get("finished"):
        return None
    try:
        return parse_time(summary["finished"]).timestamp()
    except ValueError:
        return None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_METRICS = (
    ("volsafe_job_last_success_timestamp_seconds", "gauge", "Unix time the job last succeeded.",
     lambda e: _timestamp(e.get("last_success"))),
    ("volsafe_job_last_failure_timestamp_seconds", "gauge", "Unix time the job last failed or was aborted.",
     lambda e: _timestamp(e.get("last_failure"))),
    ("volsafe_job_last_success", "gauge", "1 if the job's last run succeeded, else 0.",
     lambda e: (1 if e["last_run"]["result"] == "success" else 0) if e.get("last_run") else None),
    ("volsafe_job_last_duration_seconds", "gauge", "Duration of the job's last run.",
     lambda e: e["last_run"].get("duration_seconds") if e.get("last_run") else None),
    ("volsafe_job_last_bytes", "gauge", "Bytes stored by the job's last run, summed over backends.",
     lambda e: e["last_run"].get("bytes") if e.get("last_run") else None),
    ("volsafe_job_runs_total", "counter", "Runs of the job recorded in the status file.", lambda e: e.get("runs", 0)),
    ("volsafe_job_failures_total", "counter", "Failed or aborted runs of the job.", lambda e: e.get("failures", 0)),
)


def render_metrics(status: dict, jobs: Iterable[str] = ()) -> str:
    """Return the Prometheus text exposition of ``status`` (``StatusStore.read()``), for ``jobs`` too."""
    names = sorted(set(status) | set(jobs))
    lines = []
    for metric, kind, help_text, value_of in _METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for job in names:
            value = value_of(status.get(job) or {})
            if value is not None:
                lines.append(f'{metric}{{job="{_label(job)}"}} {float(value):g}' if kind == "gauge" else f'{metric}{{job="{_label(job)}"}} {int(value)}')
    return "\n".join(lines) + "\n"


def health_report(status: dict, jobs: Iterable[str] = ()) -> tuple[bool, dict]:
    """Return (healthy, report): healthy unless some job's last run did not succeed."""
    report = {}
    for job in sorted(set(status) | set(jobs)):
        entry = status.get(job) or {}
        report[job] = {
            "last_result": (entry.get("last_run") or {}).get("result"),
            "last_success": (entry.get("last_success") or {}).get("finished"),
            "last_failure": (entry.get("last_failure") or {}).get("finished"),
            "last_error": ((entry.get("last_failure") or {}).get("errors") or [None])[0],
        }
    healthy = all(r["last_result"] in (None, "success") for r in report.values())
    return healthy, {"healthy": healthy, "jobs": report}


class HealthServer:
    """A small HTTP server in a daemon thread: ``/health`` (JSON; 503 when a job's last run failed)
    and ``/metrics`` (Prometheus)."""

    def __init__(self, listen: str, status: Callable[[], dict], jobs: Iterable[str] = ()):
        host, _, port = listen.rpartition(":")
        job_names = list(jobs)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(status(), job_names))
                elif path in ("/health", "/healthz", "/"):
                    healthy, report = health_report(status(), job_names)
                    self._send(200 if healthy else 503, "application/json", json.dumps(report, indent=2) + "\n")
                else:
                    self._send(404, "text/plain", "not found: try /health or /metrics\n")

            def _send(self, code: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # scrapes every few seconds would flood stderr
                pass

        self.server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
        self.server.daemon_threads = True
        self.address = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="volsafe-health", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_webhook(url: str, summary: dict, timeout: float) -> bool:
    """POST ``summary`` as JSON to ``url``. Returns whether it was accepted (2xx); never raises."""
    body = json.dumps({"event": f"job_{summary['result']}", **summary}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "volsafe"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # The URL may hold a token: name only its host.
        where = urllib.parse.urlsplit(url).hostname or "?"
        log.warning("webhook to %s failed: %s", where, getattr(exc, "reason", None) or exc)
        return False
