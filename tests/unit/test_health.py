"""Health: the status file, Prometheus metrics, the HTTP endpoint and the webhook, on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from backup.actions.job import JobOutcome
from backup.config.schema import Config, parse_config
from backup.jobs.health import HealthServer, RateLimitedLog, StatusStore, health_report, listen_address, render_metrics, send_webhook
from backup.jobs.scheduler import finish_run

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def outcome(job: str, ok: bool, started: datetime = T0, interrupted: bool = False) -> JobOutcome:
    o = JobOutcome(job, started, finished=started + timedelta(seconds=2), duration=2.0, volumes=["db"], backends=["file:///b"], bytes=1234)
    if not ok:
        o.errors.append("db: no volume named 'db'")
    if interrupted:
        o.aborted = True
        o.errors.append("aborted by SIGTERM: the backup was cleaned up and nothing was pruned")
    return o


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; return (status, body) for any HTTP status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset is waiting); never blocks."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


@pytest.fixture
def hook():
    """A local HTTP server that records every POST body; yields (url, bodies)."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def test_status_file_keeps_last_success_and_failure(tmp_path):
    store = StatusStore(tmp_path / "s" / "status.json")
    assert store.read() == {}
    store.record(outcome("web", True).summary())
    entry = store.record(outcome("web", False, T0 + timedelta(hours=1)).summary())
    assert entry["runs"] == 2 and entry["failures"] == 1
    assert entry["last_success"]["finished"] == "2026-11-27T12:00:02.000Z"
    assert entry["last_failure"]["finished"] == "2026-11-27T13:00:02.000Z"
    assert entry["last_run"]["result"] == "failure"
    assert store.read()["web"] == entry


def test_metrics_text(tmp_path):
    store = StatusStore(tmp_path / "status.json")
    store.record(outcome("web", True).summary())
    text = render_metrics(store.read(), ["web", "never"])
    assert "# TYPE volsafe_job_last_success_timestamp_seconds gauge" in text
    assert f'volsafe_job_last_success_timestamp_seconds{{job="web"}} {T0.timestamp() + 2!r}\n' in text
    assert 'volsafe_job_last_duration_seconds{job="web"} 2.0\n' in text
    assert 'volsafe_job_last_bytes{job="web"} 1234' in text
    assert 'volsafe_job_runs_total{job="never"} 0' in text
    assert 'volsafe_job_last_failure_timestamp_seconds{job="web"}' not in text


def test_http_endpoint(tmp_path):
    store = StatusStore(tmp_path / "status.json")
    server = HealthServer("127.0.0.1:0", store.read, ["web"]).start()
    try:
        base = f"http://{server.address}"
        with urllib.request.urlopen(f"{base}/health") as r:
            assert r.status == 200 and json.load(r)["jobs"]["web"]["last_result"] is None
        store.record(outcome("web", False).summary())
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/health")
        assert info.value.code == 503
        report = json.load(info.value)
        assert report["healthy"] is False and report["jobs"]["web"]["last_error"] == "db: no volume named 'db'"
        with urllib.request.urlopen(f"{base}/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            assert 'volsafe_job_last_success{job="web"} 0' in r.read().decode()
    finally:
        server.stop()


def test_webhook_on_failure_and_optionally_on_success(tmp_path, hook):
    url, bodies = hook
    config = Config(status_file=tmp_path / "status.json", webhook_url=url)
    finish_run(config, outcome("web", True))
    assert bodies == []  # success is not sent unless asked
    finish_run(config, outcome("web", False))
    (body,) = bodies
    assert body["event"] == "job_failure" and body["job"] == "web" and body["errors"] == ["db: no volume named 'db'"]
    finish_run(Config(status_file=tmp_path / "status.json", webhook_url=url, webhook_on_success=True), outcome("web", True))
    assert bodies[-1]["event"] == "job_success" and bodies[-1]["bytes"] == 1234


def test_unreachable_webhook_only_warns(caplog):
    assert send_webhook("http://127.0.0.1:1/hook?token=SECRET", {"job": "j", "result": "failure"}, 2) is False
    assert "webhook to 127.0.0.1 failed" in caplog.text and "SECRET" not in caplog.text


def test_metrics_keep_full_precision(tmp_path):
    # A realistic finish time: `:g` wrote 1.79604e+09, up to 5,000 s wrong.
    finished = datetime.fromtimestamp(1796040123, timezone.utc) + timedelta(milliseconds=456)
    o = JobOutcome("db", finished - timedelta(seconds=3723.456), finished=finished, duration=3723.456, bytes=123_456_789_012)
    store = StatusStore(tmp_path / "status.json")
    store.record(o.summary())
    samples = {}
    for line in render_metrics(store.read()).splitlines():
        if not line.startswith("#"):
            name, value = line.split(" ")
            samples[name.split("{")[0]] = value
    assert abs(float(samples["volsafe_job_last_success_timestamp_seconds"]) - 1796040123.456) < 0.001
    assert abs(float(samples["volsafe_job_last_duration_seconds"]) - 3723.456) < 0.001
    # Bytes and counts are integers, written as such.
    assert samples["volsafe_job_last_bytes"] == "123456789012"
    assert samples["volsafe_job_runs_total"] == "1" and samples["volsafe_job_failures_total"] == "0"
    assert samples["volsafe_job_last_success"] == "1"


def test_an_interrupted_run_is_neither_success_nor_failure(tmp_path, hook):
    url, bodies = hook
    config = Config(status_file=tmp_path / "status.json", webhook_url=url)
    store = StatusStore(config.status_file)
    server = HealthServer("127.0.0.1:0", store.read, ["web"]).start()
    try:
        base = f"http://{server.address}"
        finish_run(config, outcome("web", True))
        summary = finish_run(config, outcome("web", True, T0 + timedelta(hours=1), interrupted=True))
        assert summary["result"] == "interrupted"
        assert bodies == []  # no failure webhook
        entry = store.read()["web"]
        assert entry["last_run"]["result"] == "interrupted" and entry["interruptions"] == 1
        assert entry.get("failures", 0) == 0 and "last_failure" not in entry
        code, body = get(f"{base}/health")
        assert code == 200 and json.loads(body)["jobs"]["web"]["last_result"] == "interrupted"
        _, metrics = get(f"{base}/metrics")
        assert 'volsafe_job_last_success{job="web"} 1\n' in metrics.decode()
        assert 'volsafe_job_failures_total{job="web"} 0\n' in metrics.decode()
        assert 'volsafe_job_interruptions_total{job="web"} 1\n' in metrics.decode()
        # An interruption does not hide an earlier failure either: health follows the last run that finished.
        finish_run(config, outcome("web", False, T0 + timedelta(hours=2)))
        finish_run(config, outcome("web", True, T0 + timedelta(hours=3), interrupted=True))
        assert get(f"{base}/health")[0] == 503
        assert [b["event"] for b in bodies] == ["job_failure"]
    finally:
        server.stop()
    assert health_report({"web": {"last_run": {"result": "interrupted"}}})[0] is True  # never finished a run


def test_listen_without_host_is_loopback_only():
    assert listen_address(":9180") == ("127.0.0.1", 9180)
    assert listen_address("0.0.0.0:9180") == ("0.0.0.0", 9180)
    assert listen_address("[::1]:9180") == ("::1", 9180)
    assert parse_config('[health]\nlisten = ":9180"\n', environ={}).listen == ":9180"  # existing configs still parse
    server = HealthServer(":0", dict, ["web"]).start()
    try:
        host, port = server.address.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert get(f"http://127.0.0.1:{port}/health")[0] == 200
        # 127.0.0.2 is this host too, but not the address bound: refused (an all-interfaces bind accepts it).
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", int(port)), timeout=2).close()
    finally:
        server.stop()


def test_rate_limited_log_says_each_kind_once_a_minute(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("volsafe.test"), 60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="volsafe.test")
    for _ in range(1000):
        limited.warning("accept", "cannot accept: %s", "Too many open files")
        limited.info("timeout", "slow client")
    assert [r.getMessage() for r in caplog.records] == ["cannot accept: Too many open files", "slow client"]
    now[0] = 61
    limited.warning("accept", "cannot accept: %s", "Too many open files")
    assert caplog.records[-1].getMessage() == "cannot accept: Too many open files (999 more like this since the last one were not logged)"


def test_half_sent_requests_neither_exhaust_fds_nor_block_health(tmp_path, caplog):
    """Hundreds of clients that never finish their request: the excess is closed at once, the rest
    after the read timeout; the server holds at most its cap of sockets, /health keeps answering,
    and the log says so a few times, not once per connection."""
    caplog.set_level(logging.DEBUG, logger="volsafe.health")
    timeout, cap, count = 3.0, 32, 400
    store = StatusStore(tmp_path / "status.json")
    store.record(outcome("web", True).summary())
    server = HealthServer("127.0.0.1:0", store.read, ["web"], timeout=timeout, max_connections=cap).start()
    clients: list[socket.socket] = []
    try:
        host, port = server.address.rsplit(":", 1)
        base = f"http://{server.address}"
        before = open_fds()
        began = time.monotonic()
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=2)
            clients.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends it
        assert time.monotonic() - began < timeout, "opening the connections took too long for this test"

        # /health answers at once, while those connections are still open on our side.
        code, body = get(f"{base}/health", timeout=2)
        assert code == 200 and json.loads(body)["healthy"] is True
        # The excess was closed at once; the server holds no more sockets than its cap.
        deadline = time.monotonic() + 2
        while sum(map(closed_by_server, clients)) < count - cap and time.monotonic() < deadline:
            time.sleep(0.05)
        still_open = [c for c in clients if not closed_by_server(c)]
        assert len(still_open) <= cap
        assert open_fds() - before - len(clients) <= cap + 2  # the server's side of them, beyond our clients
        assert time.monotonic() - began < timeout, "the excess was not closed before the read timeout"

        # The slow ones are closed after the read timeout.
        deadline = time.monotonic() + timeout + 3
        while not all(map(closed_by_server, still_open)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(map(closed_by_server, still_open))
        assert time.monotonic() - began >= timeout * 0.9  # by the timeout, not before
        deadline = time.monotonic() + 2
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.open_connections == 0
        assert get(f"{base}/health")[0] == 200
        assert get(f"{base}/metrics")[0] == 200
    finally:
        for sock in clients:
            sock.close()
        server.stop()
    lines = [r for r in caplog.records if r.name == "volsafe.health"]
    assert 1 <= len(lines) <= 5, [r.getMessage() for r in lines]
