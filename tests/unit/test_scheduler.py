"""The scheduler loop without a daemon: no overlap, coalescing, stop and abort on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from datetime import datetime, timezone

import pytest

import backup.jobs.scheduler as scheduler_module
from backup.config.schema import parse_config
from backup.jobs.health import StatusStore, health_report
from backup.jobs.scheduler import Scheduler, missed_run
from tests.support.configs import job_config
from tests.support.signals import signal_after


def make_config(tmp_path, schedule="@every 1s", stop_timeout="5s", health=""):
    return parse_config(
        job_config(
            tmp_path, job="slow", volumes=("v",), schedule=schedule, health_keys=f"{health}\n",
            extra=f'[scheduler]\nstop_timeout = "{stop_timeout}"\n',
        ),
        environ={},
    )


@contextlib.contextmanager
def sigterm_after(seconds: float):
    """SIGTERM this process ``seconds`` into the block, meant for a ``serve()`` running in it.

    Safe on every path (tests/support/signals.py): if serve() returns early or raises, the timer is
    disarmed, and a SIGTERM that came after serve() had put back the previous handler fails the
    test instead of killing the pytest run.
    """
    with signal_after(seconds, signal.SIGTERM, catch_strays=True) as sent:
        yield
    assert sent.sent, "serve() returned before the SIGTERM was sent"
    assert not sent.stray, "the SIGTERM came after serve() had returned"


def test_a_slow_job_is_never_started_twice(tmp_path, monkeypatch, caplog):
    active, starts, peak = [0], [], [0]

    def slow_job(host, job, backends, image, progress, outcome, encrypt_with=None):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        starts.append(time.monotonic())
        try:
            time.sleep(2.5)
        finally:
            active[0] -= 1
        return outcome

    monkeypatch.setattr(scheduler_module, "run_job", slow_job)
    caplog.set_level(logging.INFO)
    began = time.monotonic()
    with sigterm_after(4.2):
        Scheduler(make_config(tmp_path), lambda: None, lambda: "img").serve()
    assert peak[0] == 1
    # Starts come every second, but a run takes 2.5 s: the starts while it runs are skipped.
    assert 1 <= len(starts) <= 2
    assert all(b - a >= 2.4 for a, b in zip(starts, starts[1:], strict=False))
    assert "job slow: still running; skipping this start" in caplog.text
    assert time.monotonic() - began < 8
    assert StatusStore(tmp_path / "status.json").read()["slow"]["last_run"]["result"] == "success"
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers were restored, not left as ours


def test_stop_timeout_aborts_a_running_job_and_records_it(tmp_path, monkeypatch):
    cancelled, webhooks = [], []

    def endless_job(host, job, backends, image, progress, outcome, encrypt_with=None):
        try:
            time.sleep(60)
        except BaseException as exc:
            cancelled.append(type(exc).__name__)
            raise

    monkeypatch.setattr(scheduler_module, "run_job", endless_job)
    monkeypatch.setattr(scheduler_module, "send_webhook", lambda url, summary, timeout: webhooks.append(summary))
    began = time.monotonic()
    config = make_config(tmp_path, stop_timeout="1s", health='webhook_url = "http://127.0.0.1:1/hook"')
    with sigterm_after(1.8):
        Scheduler(config, lambda: None, lambda: "img").serve()
    assert cancelled == ["Cancelled"]
    assert time.monotonic() - began < 5
    status = StatusStore(tmp_path / "status.json").read()
    last = status["slow"]["last_run"]
    # Interrupted, not failed: /health stays healthy and the failure webhook is not called.
    assert last["result"] == "interrupted" and "nothing was pruned" in last["errors"][0]
    assert status["slow"].get("failures", 0) == 0 and "last_failure" not in status["slow"]
    assert health_report(status, config.jobs)[0] is True
    assert webhooks == []


def test_a_waiting_job_is_coalesced(tmp_path):
    s = Scheduler(make_config(tmp_path), lambda: None, lambda: "img")
    s.request("slow")
    s.request("slow")
    assert s._queue.qsize() == 1


@pytest.mark.parametrize(
    "schedule, last_started, now, grace, expected",
    [
        ("0 3 * * *", "2026-11-26 03:00", "2026-11-27 03:30", 3600, "2026-11-27 03:00"),  # 30 min late: run once
        ("0 3 * * *", "2026-11-26 03:00", "2026-11-27 05:00", 3600, None),  # 2 h late: beyond the grace time
        ("0 3 * * *", "2026-11-20 03:00", "2026-11-27 03:10", 3600, None),  # the newest missed start is what counts
        ("0 3 * * *", "2026-11-27 03:00", "2026-11-27 03:30", 3600, None),  # not missed
        ("@every 1h", "2026-11-27 01:00", "2026-11-27 02:20", 3600, "2026-11-27 02:00"),
        ("@every 1h", None, "2026-11-27 02:20", 3600, None),  # never ran: nothing to catch up
    ],
)
def test_missed_runs_after_downtime(tmp_path, schedule, last_started, now, grace, expected):
    def at(text):
        return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc) if text else None

    config = make_config(tmp_path, schedule=schedule)
    job = config.jobs["slow"]
    job = type(job)(**{**job.__dict__, "timezone": "UTC"})
    assert missed_run(job, at(last_started), at(now), grace) == at(expected)
