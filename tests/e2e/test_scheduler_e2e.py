"""End to end with the real daemon: `volsafe run` until it has run a job three times, `jobs run`, `jobs list`, health."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request

import pytest

from backup.jobs.health import StatusStore
from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_volume(host, image, volume) -> None:
    host.api.create_volume(volume)
    run_in_volume(host, image, volume, "mkdir -p /v/d && echo hello > /v/d/f && head -c 100000 /dev/urandom > /v/blob")


def write_config(tmp_path, body: str):
    path = tmp_path / "volsafe.toml"
    path.write_text(f'[health]\nstatus_file = "{tmp_path}/status.json"\n' + body)
    return path


def wait_for_runs(status_file, job: str, runs: int, proc, timeout: float = 90.0) -> None:
    """Wait until the scheduler's status file records ``runs`` finished runs of ``job`` (polling, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()
        done = StatusStore(status_file).read().get(job, {}).get("runs", 0)  # written atomically
        if done >= runs:
            return
        assert time.monotonic() < deadline, f"only {done} runs of {job} within {timeout:g}s"
        time.sleep(0.1)


def test_run_every_4s_keeps_last_two_and_stops_on_sigterm(docker_host, helper_image, volumes, volsafe, volsafe_process, tmp_path):
    volume = volumes("sched")
    small_volume(docker_host, helper_image, volume)
    store, port = tmp_path / "store", free_port()
    config = write_config(
        tmp_path,
        f'listen = "127.0.0.1:{port}"\n'
        f'[scheduler]\nstop_timeout = "8s"\n'
        f'[backends.here]\ntype = "local"\npath = "{store}"\n'
        f'[jobs.every4]\nvolumes = ["{volume}"]\nschedule = "@every 4s"\nbackends = ["here"]\nretention = {{ keep_last = 2 }}\n',
    )
    proc = volsafe_process("run", "--config", str(config), "--log-format", "json")
    try:
        wait_for_runs(tmp_path / "status.json", "every4", 3, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - began < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err

    listed = json.loads(volsafe("list", volume, "--from", str(store), "--json").out)
    assert len(listed) == 2
    assert not [p for p in store.rglob("*") if ".volsafe-partial-" in p.name]

    runs = [json.loads(line) for line in err.splitlines() if line.startswith("{") and '"job": "every4"' in line]
    assert len(runs) >= 3 and all(r["result"] == "success" and r["volumes"] == [volume] for r in runs), err
    assert runs[-1]["pruned"] >= 1 and runs[-1]["backends"] == [store.as_uri()]
    assert 'volsafe_job_last_success_timestamp_seconds{job="every4"}' in metrics
    assert 'volsafe_job_last_bytes{job="every4"}' in metrics

    # `jobs list` reads the status file that the scheduler wrote.
    shown = json.loads(volsafe("--config", str(config), "jobs", "list", "--json").out)
    assert shown[0]["job"] == "every4" and shown[0]["last_result"] == "success" and shown[0]["last_success"]


def test_failing_job_prunes_nothing_and_a_good_run_prunes(docker_host, helper_image, volumes, volsafe, tmp_path):
    good, missing = volumes("good"), volumes("missing")
    small_volume(docker_host, helper_image, good)
    store = tmp_path / "store"
    for _ in range(2):
        assert volsafe("backup", good, "--to", str(store)).code == 0
    body = (
        f'[backends.here]\ntype = "local"\npath = "{store}"\n'
        f'[jobs.broken]\nvolumes = ["{good}", "{missing}"]\nschedule = "@daily"\nbackends = ["here"]\nretention = {{ keep_last = 1 }}\n'
        f'[jobs.fine]\nvolumes = ["{good}"]\nschedule = "@daily"\nbackends = ["here"]\nretention = {{ keep_last = 1 }}\n'
    )
    config = write_config(tmp_path, body)

    failed = volsafe("--config", str(config), "jobs", "run", "broken")
    assert failed.code == 1
    assert f"volsafe: error: job broken: {missing}: no volume named '{missing}'" in failed.err
    assert "failure" in failed.out
    listed = json.loads(volsafe("--config", str(config), "list", good, "--from", "here", "--json").out)
    assert len(listed) == 3  # the new backup of the good volume, and nothing pruned

    done = volsafe("--config", str(config), "jobs", "run", "fine", "--json")
    assert done.code == 0, done.err
    summary = json.loads(done.out)
    assert summary["result"] == "success" and summary["pruned"] == 3
    listed = json.loads(volsafe("--config", str(config), "list", good, "--from", "here", "--json").out)
    assert [r["id"] for r in listed] == summary["backups"]

    table = volsafe("--config", str(config), "jobs", "list")
    rows = {line.split()[0]: line for line in table.out.splitlines()[1:]}
    assert "failure" in rows["broken"] and "success" in rows["fine"]
