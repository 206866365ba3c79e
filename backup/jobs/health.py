"""Health: the status file, Prometheus metrics, the optional HTTP endpoint, and the webhook.

The status file is the one source of truth: every run (scheduled or ``jobs run``) records its
outcome there, and the endpoint and ``jobs list`` read it.

A run stopped by SIGTERM/SIGINT is recorded as ``interrupted``: it is neither a success nor a
failure, so it leaves ``/health``, the last success/failure and the failure counter as they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import math
import os
import selectors
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable, Iterable, Iterator

from backup.archive.manifest import parse_time
from backup.private_files import open_private, private_dirs, write_private

log = logging.getLogger("volsafe.health")
FORMAT = "volsafe-status"
INTERRUPTED = "interrupted"
_NOT_SETTLED = (INTERRUPTED, "aborted")  # "aborted": what status files before "interrupted" called it


class RateLimitedLog:
    """Logs each kind of message at most once per ``interval`` seconds; counts the ones it drops and
    says how many with the next one it logs."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, msg: str, *args) -> bool:
        """Log ``msg % args`` unless a ``kind`` message was logged less than ``interval`` ago; return whether it was."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._dropped[kind] = self._dropped.get(kind, 0) + 1
                return False
            self._last[kind] = now
            dropped = self._dropped.pop(kind, 0)
        if dropped:
            msg += f" ({dropped} more like this since the last one were not logged)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, kind: str, msg: str, *args) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def info(self, kind: str, msg: str, *args) -> bool:
        return self.log(logging.INFO, kind, msg, *args)


_read_log = RateLimitedLog(log)  # the endpoint reads the status file at every scrape


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
            _read_log.warning("unreadable", "ignoring unreadable status file %s: %s", self.path, exc)
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
            elif summary["result"] == INTERRUPTED:
                entry["last_interrupted"] = summary
                entry["interruptions"] = int(entry.get("interruptions", 0)) + 1
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


def settled_result(entry: dict) -> str | None:
    """Return the result of the job's last run that was not interrupted (``success`` or ``failure``),
    or None if it has none: an interrupted run leaves the job's health as it was."""
    last = entry.get("last_run") or {}
    if last.get("result") not in _NOT_SETTLED:
        return last.get("result")
    done = [s for s in (entry.get("last_success"), entry.get("last_failure")) if s and s.get("result") not in _NOT_SETTLED]
    done = [(_timestamp(s) or 0.0, s) for s in done]
    return max(done, key=lambda pair: pair[0])[1].get("result") if done else None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _seconds(value) -> str:
    # Full precision: ``:g`` kept six digits, i.e. a 2026 timestamp to within ±5,000 s. ``repr`` is
    # the shortest text that reads back as the same float.
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _integer(value) -> str:
    return str(int(value))


# (name, type, help, value of a job's status entry or None, how the value is written)
_METRICS = (
    ("volsafe_job_last_success_timestamp_seconds", "gauge", "Unix time the job last succeeded.",
     lambda e: _timestamp(e.get("last_success")), _seconds),
    ("volsafe_job_last_failure_timestamp_seconds", "gauge", "Unix time the job last failed.",
     lambda e: _timestamp(e.get("last_failure")), _seconds),
    ("volsafe_job_last_success", "gauge",
     "1 if the job's last run that was not interrupted succeeded, else 0.",
     lambda e: None if settled_result(e) is None else int(settled_result(e) == "success"), _integer),
    ("volsafe_job_last_duration_seconds", "gauge", "Duration of the job's last run.",
     lambda e: e["last_run"].get("duration_seconds") if e.get("last_run") else None, _seconds),
    ("volsafe_job_last_bytes", "gauge", "Bytes stored by the job's last run, summed over backends.",
     lambda e: e["last_run"].get("bytes") if e.get("last_run") else None, _integer),
    ("volsafe_job_runs_total", "counter", "Runs of the job recorded in the status file.", lambda e: e.get("runs", 0), _integer),
    ("volsafe_job_failures_total", "counter", "Failed runs of the job.", lambda e: e.get("failures", 0), _integer),
    ("volsafe_job_interruptions_total", "counter", "Runs of the job stopped by SIGTERM or SIGINT.",
     lambda e: e.get("interruptions", 0), _integer),
    ("volsafe_job_last_interrupted_timestamp_seconds", "gauge", "Unix time a run of the job was last interrupted.",
     lambda e: _timestamp(e.get("last_interrupted")), _seconds),
)


def render_metrics(status: dict, jobs: Iterable[str] = ()) -> str:
    """Return the Prometheus text exposition of ``status`` (``StatusStore.read()``), for ``jobs`` too."""
    names = sorted(set(status) | set(jobs))
    lines = []
    for metric, kind, help_text, value_of, write in _METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for job in names:
            try:
                value = value_of(status.get(job) or {})
                text = None if value is None else write(value)
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
                text = None  # a hand-edited status file: leave the sample out rather than fail the scrape
            if text is not None:
                lines.append(f'{metric}{{job="{_label(job)}"}} {text}')
    return "\n".join(lines) + "\n"


def health_report(status: dict, jobs: Iterable[str] = ()) -> tuple[bool, dict]:
    """Return (healthy, report): healthy unless some job's last run that was not interrupted failed."""
    report = {}
    healthy = True
    for job in sorted(set(status) | set(jobs)):
        entry = status.get(job) or {}
        report[job] = {
            "last_result": (entry.get("last_run") or {}).get("result"),
            "last_success": (entry.get("last_success") or {}).get("finished"),
            "last_failure": (entry.get("last_failure") or {}).get("finished"),
            "last_error": ((entry.get("last_failure") or {}).get("errors") or [None])[0],
        }
        healthy = healthy and settled_result(entry) in (None, "success")
    return healthy, {"healthy": healthy, "jobs": report}


LOOPBACK = "127.0.0.1"
READ_TIMEOUT = 5.0  # seconds a client has to send its whole request (and to take the response)
MAX_CONNECTIONS = 64  # open client connections; more are closed at once
MAX_REQUEST = 8192  # bytes of request line and headers


def listen_address(listen: str) -> tuple[str, int]:
    """Return (host, port) of a ``[health] listen`` value ``HOST:PORT``.

    Without a host (``:PORT``) it is 127.0.0.1 only; ``0.0.0.0:PORT`` (or ``[::]:PORT``) is how to
    listen on every interface.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or LOOPBACK, int(port)


class _Handler(BaseHTTPRequestHandler):
    """http.server's request parsing and response writing, on a request already read into memory;
    the response goes to a buffer that the server's loop sends. ``server`` is the HealthServer."""

    server: HealthServer  # type: ignore[assignment]  # duck-typed: not a socketserver.BaseServer
    wfile: io.BytesIO

    def setup(self) -> None:
        self.rfile = io.BytesIO(self.request)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        self.response = self.wfile.getvalue()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(self.server.status(), self.server.jobs))
        elif path in ("/health", "/healthz", "/"):
            healthy, report = health_report(self.server.status(), self.server.jobs)
            self._send(200 if healthy else 503, "application/json", json.dumps(report, indent=2) + "\n")
        else:
            self._send(404, "text/plain", "not found: try /health or /metrics\n")

    def _send(self, code: int, content_type: str, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # scrapes every few seconds would flood stderr
        pass

    def log_error(self, format: str, *args) -> None:  # noqa: A002 (http.server's naming)
        self.server.errors.info("bad request", "health endpoint: bad request: " + format, *args)


class _Connection:
    __slots__ = ("data", "deadline", "sent", "writing")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.data = bytearray()  # the request as it comes in, then the response
        self.sent = 0
        self.writing = False


class HealthServer:
    """A small HTTP server in a daemon thread: ``/health`` (JSON; 503 when a job's last run failed)
    and ``/metrics`` (Prometheus).

    One thread serves every connection (non-blocking sockets and a selector), so a client costs one
    file descriptor and no thread. A client has ``timeout`` seconds to send its request and take the
    response, then it is closed. At most ``max_connections`` are open: at the cap, the oldest one
    still sending its request is closed to make room (so slow clients cannot lock out the scraper),
    or, if none is, the new one is closed at once. Its problems are logged at most once a minute
    per kind.
    """

    def __init__(
        self,
        listen: str,
        status: Callable[[], dict],
        jobs: Iterable[str] = (),
        *,
        timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        log_interval: float = 60.0,
    ):
        host, port = listen_address(listen)
        self.status = status
        self.jobs = list(jobs)
        self.timeout = timeout
        self.max_connections = max(1, max_connections)
        self.errors = RateLimitedLog(log, log_interval)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._listener.setblocking(False)
        bound = self._listener.getsockname()
        self.address = f"[{bound[0]}]:{bound[1]}" if family == socket.AF_INET6 else f"{bound[0]}:{bound[1]}"
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._accept_paused_until: float | None = None
        self._connections: dict[socket.socket, _Connection] = {}  # oldest first
        self._stopping = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="volsafe-health", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._close_all()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # -- the loop (its own thread) --

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except Exception as exc:  # never let the endpoint's thread die
                    self.errors.warning("loop", "health endpoint: %s: %s", type(exc).__name__, exc)
                    time.sleep(0.05)
        finally:
            self._close_all()

    def _step(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        wait = min([0.25] + [c.deadline - now for c in self._connections.values()])
        for key, _mask in self._selector.select(max(wait, 0.0)):
            if key.data is None:
                self._accept()
            elif key.fileobj in self._connections:  # not closed by an earlier event of this batch
                if key.data.writing:
                    self._write(key.fileobj, key.data)
                else:
                    self._read(key.fileobj, key.data)
        now = time.monotonic()
        late = [sock for sock, conn in self._connections.items() if conn.deadline <= now]
        for sock in late:
            self.errors.info(
                "timeout", "health endpoint: closed a connection from %s that took over %gs", _peer(sock), self.timeout
            )
            self._close(sock)

    def _accept(self) -> None:
        for _ in range(self.max_connections):  # bounded: other connections get their turn
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: stop accepting for a moment, don't spin
                self.errors.warning("accept", "health endpoint: cannot accept a connection: %s", exc)
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + 0.5
                return
            if len(self._connections) >= self.max_connections:
                oldest = next((s for s, c in self._connections.items() if not c.writing), None)
                self.errors.warning(
                    "full", "health endpoint: %d connections open (the most allowed); closing %s",
                    len(self._connections), "the oldest still sending its request" if oldest else "new ones at once",
                )
                if oldest is None:
                    sock.close()
                    continue
                self._close(oldest)
            sock.setblocking(False)
            self._connections[sock] = conn = _Connection(time.monotonic() + self.timeout)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, sock: socket.socket, conn: _Connection) -> None:
        try:
            chunk = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(sock)
            return
        conn.data += chunk
        end = conn.data.find(b"\r\n\r\n")
        if end < 0:
            end = conn.data.find(b"\n\n")
        if end < 0:
            if len(conn.data) > MAX_REQUEST:
                self.errors.info("bad request", "health endpoint: closed %s: request over %d bytes", _peer(sock), MAX_REQUEST)
                self._close(sock)
            return
        conn.data = bytearray(self._respond(bytes(conn.data), sock))
        conn.writing = True
        conn.deadline = time.monotonic() + self.timeout
        self._selector.modify(sock, selectors.EVENT_WRITE, conn)
        self._write(sock, conn)

    def _respond(self, request: bytes, sock: socket.socket) -> bytes:
        try:
            return _Handler(request, _peer_address(sock), self).response  # type: ignore[arg-type]  # bytes and a duck-typed server (see _Handler)
        except Exception as exc:
            self.errors.warning("handler", "health endpoint: cannot answer a request: %s: %s", type(exc).__name__, exc)
            body = b"internal error\n"
            return b"HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                len(body), body,
            )

    def _write(self, sock: socket.socket, conn: _Connection) -> None:
        try:
            conn.sent += sock.send(memoryview(conn.data)[conn.sent:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            conn.sent = len(conn.data)  # the client went away: nothing more to do for it
        if conn.sent >= len(conn.data):
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self._connections.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in list(self._connections):
            self._close(sock)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        self._selector.close()


def _peer_address(sock: socket.socket):
    try:
        return sock.getpeername()
    except OSError:
        return ("?", 0)


def _peer(sock: socket.socket) -> str:
    address = _peer_address(sock)
    return str(address[0])


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
