"""Scheduled verify: a job's `verify` runs are recorded as JOB:verify in the status file and metrics."""

from __future__ import annotations

from backup.config.schema import parse_config
from backup.jobs.health import health_report, render_metrics
from backup.jobs.scheduler import Scheduler
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup
from tests.support.configs import job_config


def _config(tmp_path):
    return parse_config(
        job_config(tmp_path, job_keys='verify = "@weekly"\n'),
        environ={},
    )


def test_scheduled_verify_reports_to_status_and_metrics(tmp_path):
    config = _config(tmp_path)
    assert config.jobs["nightly"].verify == "@weekly" and not config.jobs["nightly"].verify_restore_test
    backend = LocalBackend(tmp_path / "store")
    good = store_backup(backend, "db", make_tar(SAMPLE), stamp_token="aaa1")
    # No Docker needed: the job names its volumes, and there is no restore test.
    scheduler = Scheduler(config, docker=lambda: None, helper_image=lambda: "unused")

    outcome = scheduler.run_once("nightly:verify")
    assert outcome.ok, outcome.errors
    bad = store_backup(backend, "db", make_tar(SAMPLE), stamp_token="aaa2")
    (tmp_path / "store" / bad.backup_id.archive_key).write_bytes(b"not an archive")
    outcome = scheduler.run_once("nightly:verify")
    assert not outcome.ok and str(bad.backup_id) in outcome.errors[0] and len(outcome.errors) == 1

    status = scheduler.store.read()
    assert status["nightly:verify"]["runs"] == 2 and status["nightly:verify"]["failures"] == 1
    assert 'volsafe_job_failures_total{job="nightly:verify"} 1' in render_metrics(status, config.jobs)
    healthy, report = health_report(status, config.jobs)
    assert not healthy and str(bad.backup_id) in report["jobs"]["nightly:verify"]["last_error"]
    assert str(good.backup_id) not in report["jobs"]["nightly:verify"]["last_error"]


def test_bad_verify_schedule_is_a_config_error(tmp_path):
    import pytest

    from backup.config.schema import ConfigError

    with pytest.raises(ConfigError, match="verify"):
        parse_config('[jobs.j]\nvolumes = ["v"]\nschedule = "@daily"\nverify = "@sometimes"\n', environ={})


def test_scheduled_verify_of_a_missing_or_empty_backend_fails(tmp_path):
    # The store directory does not exist (an unmounted NAS), then exists empty: both are failures.
    scheduler = Scheduler(_config(tmp_path), docker=lambda: None, helper_image=lambda: "unused")
    store = tmp_path / "store"
    for _ in ("missing", "empty"):
        outcome = scheduler.run_once("nightly:verify")
        assert not outcome.ok and outcome.errors == [f"no backups found in {store.as_uri()}"]
        store.mkdir(exist_ok=True)
    # Backups of another volume only: db has none yet (its first run is still to come), which is fine.
    store_backup(LocalBackend(store), "web", make_tar(SAMPLE), stamp_token="aaa3")
    outcome = scheduler.run_once("nightly:verify")
    assert outcome.ok, outcome.errors
