"""Health: the status file, Prometheus metrics, the HTTP endpoint and the webhook, on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from backup.actions.job import JobOutcome
from backup.config.schema import Config
from backup.jobs.health import HealthServer, StatusStore, render_metrics, send_webhook
from backup.jobs.scheduler import finish_run

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def outcome(job: str, ok: bool, started: datetime = T0) -> JobOutcome:
    o = JobOutcome(job, started, finished=started + timedelta(seconds=2), duration=2.0, volumes=["db"], backends=["file:///b"], bytes=1234)
    if not ok:
        o.errors.append("db: no volume named 'db'")
    return o


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
    assert f'volsafe_job_last_success_timestamp_seconds{{job="web"}} {T0.timestamp() + 2:g}' in text
    assert 'volsafe_job_last_duration_seconds{job="web"} 2' in text
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
