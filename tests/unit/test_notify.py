"""Notifications through apprise, against local receivers only: an HTTP listener on 127.0.0.1 for
apprise's json:// and an SMTP server on 127.0.0.1 (aiosmtpd) for mailto://."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backup.actions.backup import VolumeBackup
from backup.actions.job import JobOutcome
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, new_stamp
from backup.config.schema import ConfigError, parse_config
from backup.jobs.scheduler import finish_run
from backup.units import human_size
from storage_backends.local import LocalBackend

DEADLINE = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_receiver():
    """An HTTP server on 127.0.0.1 that records every POST: (path, parsed JSON body)."""
    got: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], got
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def smtp_receiver():
    """An SMTP server on 127.0.0.1 (aiosmtpd) that records every message: (from, to, email.message)."""
    from aiosmtpd.controller import Controller

    got: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            got.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, got
    finally:
        controller.stop()


def wait_for(items: list, count: int = 1) -> list:
    deadline = time.monotonic() + DEADLINE
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return items


def config_with(text: str, tmp_path):
    return parse_config(f'[health]\nstatus_file = "{tmp_path / "status.json"}"\n' + text, environ={})


def outcome(job="nightly", *, failed=True, host="db-1", aborted=False) -> JobOutcome:
    now = datetime.now(timezone.utc)
    made = VolumeBackup("pgdata")
    made.manifest = Manifest(BackupId("pgdata", new_stamp(now)), now, {}, "local", {}, host, "id", "0", 5_000_000, 3 * 1024 * 1024, "0" * 64, 1)
    made.stored_on = [LocalBackend("/tmp/nowhere-volsafe")]
    run = JobOutcome(job, now - timedelta(seconds=3), finished=now, duration=3.0, volumes=["pgdata", "uploads"],
                     backends=["s3://bucket/backups"], bytes=3 * 1024 * 1024, backups=[made], host=host, aborted=aborted)
    if failed:
        run.errors = ["uploads to s3://bucket/backups: upload failed: SlowDown", "second problem"]
    return run


def test_a_failed_job_is_sent_to_json_and_email_with_job_host_volumes_sizes_and_error(tmp_path, http_receiver, smtp_receiver):
    http_port, posts = http_receiver
    smtp_port, mails = smtp_receiver
    config = config_with(
        f'[notify.ops]\nurls = ["json://127.0.0.1:{http_port}/volsafe", '
        f'"mailto://127.0.0.1:{smtp_port}?from=volsafe@example.com&to=ops@example.com"]\n',
        tmp_path,
    )
    finish_run(config, outcome(), log_line=False)
    (path, body), = wait_for(posts)
    assert path == "/volsafe"
    assert body["title"] == "volsafe: job nightly failed on db-1"
    message = body["message"]
    for line in ("job: nightly", "host: db-1", "result: failure", f"volumes: pgdata ({human_size(3 * 1024 * 1024)}), uploads",
                 "error: uploads to s3://bucket/backups: upload failed: SlowDown (and 1 more)"):
        assert line in message.splitlines(), (line, message)
    assert f"stored: {human_size(3 * 1024 * 1024)} to s3://bucket/backups" in message
    (sender, to, mail), = wait_for(mails)
    assert (sender, to) == ("volsafe@example.com", ["ops@example.com"])
    assert mail["Subject"] == "volsafe: job nightly failed on db-1"
    text = next(part for part in mail.walk() if part.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert "host: db-1" in text and "error: uploads to s3://bucket/backups" in text


def test_each_event_goes_where_its_routes_say(tmp_path, http_receiver, smtp_receiver):
    http_port, posts = http_receiver
    smtp_port, mails = smtp_receiver
    config = config_with(
        f'[notify.chat]\nurls = ["json://127.0.0.1:{http_port}/chat"]\nevents = ["success"]\n'
        f'[notify.pager]\nurls = ["mailto://127.0.0.1:{smtp_port}?from=v@example.com&to=pager@example.com"]\n'
        'events = ["verify_failure"]\n',
        tmp_path,
    )
    finish_run(config, outcome(failed=False), log_line=False)  # success: chat only
    finish_run(config, outcome(failed=True), log_line=False)  # backup failure: nobody takes it
    finish_run(config, outcome("nightly:verify", failed=True), log_line=False)  # verify failure: pager
    finish_run(config, outcome(failed=True, aborted=True), log_line=False)  # interrupted: nothing at all
    (path, body), = wait_for(posts)
    assert path == "/chat" and body["title"] == "volsafe: job nightly succeeded on db-1"
    (_, to, mail), = wait_for(mails)
    assert to == ["pager@example.com"] and mail["Subject"] == "volsafe: verify of job nightly failed on db-1"
    # finish_run sends before it returns and each receiver records a message before it answers, so
    # nothing can still be on its way: exactly these two came.
    assert len(posts) == 1 and len(mails) == 1


def test_the_webhook_keeps_working_beside_notifications(tmp_path, http_receiver):
    port, posts = http_receiver
    config = config_with(
        f'webhook_url = "http://127.0.0.1:{port}/webhook"\n[notify.ops]\nurls = ["json://127.0.0.1:{port}/apprise"]\n', tmp_path
    )
    finish_run(config, outcome(), log_line=False)
    got = dict(wait_for(posts, 2))
    assert got["/webhook"]["event"] == "job_failure" and got["/webhook"]["host"] == "db-1"
    assert got["/apprise"]["title"] == "volsafe: job nightly failed on db-1"


def test_an_unreachable_receiver_is_a_warning_not_a_failure(tmp_path, caplog):
    config = config_with(f'[notify.ops]\nurls = ["json://127.0.0.1:{free_port()}/x"]\n', tmp_path)
    summary = finish_run(config, outcome(), log_line=False)
    assert summary["result"] == "failure"
    assert any("not delivered" in r.getMessage() and "json://127.0.0.1" in r.getMessage() for r in caplog.records)


def test_config_checks_routes():
    with pytest.raises(ConfigError) as bad:
        parse_config('[notify.ops]\nurls = ["not a url"]\nevents = ["failed"]\njobs = ["nope"]\n', environ={})
    text = str(bad.value)
    assert "notify.ops.urls: not an apprise URL" in text
    assert "notify.ops.events: unknown event 'failed'" in text
    assert "notify.ops.jobs: unknown job 'nope'" in text
    config = parse_config('[notify.ops]\nurls = ["ntfy://${TOPIC}"]\n', environ={"TOPIC": "t1"})
    assert config.notify["ops"].urls == ("ntfy://t1",)
    assert config.notify["ops"].events == ("failure", "verify_failure", "stale")


def test_status_notify_sends_the_stale_event(run, tmp_path, http_receiver, monkeypatch):
    port, posts = http_receiver
    store = LocalBackend(tmp_path / "store")
    old = datetime.now(timezone.utc) - timedelta(days=3)
    manifest = Manifest(BackupId("db", new_stamp(old)), old, {}, "local", {}, "db-2", "id", "0", 10, 2048, "0" * 64, 1)
    store.save(manifest.backup_id.archive_key, [b"x"])
    store.save(manifest.backup_id.manifest_key, [manifest.to_json()])
    (tmp_path / "volsafe.toml").write_text(f'[notify.ops]\nurls = ["json://127.0.0.1:{port}/stale"]\nevents = ["stale"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VOLSAFE_CONFIG", raising=False)
    code, out, err = run("status", "--from", str(store.root))
    assert code == 1 and posts == []  # without --notify, nothing is sent
    code, out, err = run("status", "--from", str(store.root), "--notify")
    assert code == 1, err
    (path, body), = wait_for(posts)
    assert body["title"] == "volsafe: 1 volume(s) on db-2 without a backup newer than 26h"
    assert f"host db-2: volume db: newest {manifest.backup_id}, 3d old, 1 backup(s), {human_size(2048)} stored" in body["message"]


def test_apprise_is_loaded_only_when_something_is_sent():
    code = "import sys, backup.cli, backup.jobs.scheduler, backup.jobs.notify; print('apprise' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
