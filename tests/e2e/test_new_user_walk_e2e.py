"""A new user's walk through the README, as one test on the real daemon (issue 18, "done when").

volsafe is installed; the user writes a volsafe.toml next to their Compose project (a backend "nas",
a scheduled job for the project), checks it, backs the project up with --stop, restores one volume
under another name, restores it in place while the app runs, migrates a volume to a second host
that lacks the helper image, runs the job by hand and scrapes /metrics from ``volsafe run``.
Everything goes through the CLI, as the user types it; Docker's own events and a read-back of each
volume's tree are the witnesses.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest

from tests.support import apps
from tests.support.apps import compose_project, events, state_of
from tests.support.configs import job_config
from tests.support.helper_images import without_image
from tests.support.second_daemon import free_port
from tests.support.volume_tree import fill_tricky, run_in_volume, snapshot

pytestmark = pytest.mark.docker

app, private_state = apps.app, apps.private_state  # the shared fixtures; private_state is autouse


def _scrape(port: int, path: str, deadline: float) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH, retrying until the server answers or ``deadline`` passes."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_new_user_walk(
    docker_host, helper_image, volumes, app, second_daemon, volsafe, volsafe_process, tmp_path, monkeypatch, private_state
):
    # -- a Compose project "shop": volumes db and files, service db, service api (depends on db) ----------
    project = f"vswalk{secrets.token_hex(3)}"
    db_volume, files_volume, copy = volumes("db"), volumes("files"), volumes("db-old")
    shop = compose_project(docker_host, app, project, db_volume, files_volume)
    db, api = shop.db, shop.api
    fill_tricky(docker_host, helper_image, db_volume)
    run_in_volume(docker_host, helper_image, files_volume, "mkdir -p /v/img && head -c 300000 /dev/urandom > /v/img/a.png")
    db_tree, files_tree = snapshot(docker_host, helper_image, db_volume), snapshot(docker_host, helper_image, files_volume)
    target = second_daemon.host
    port = free_port()
    try:
        # -- the user's volsafe.toml, found in the working directory -----------------------------------------
        monkeypatch.chdir(tmp_path)
        nas = tmp_path / "nas"
        status_file = tmp_path / "status.json"
        config = tmp_path / "volsafe.toml"
        config.write_text(job_config(
            tmp_path, job="shop", volumes=None, backend="nas", store=nas, schedule="30 2 * * *",
            health_keys=f'listen = "127.0.0.1:{port}"\n',
            job_keys=f'projects = ["{project}"]\nstop_containers = true\nretention = {{ keep_last = 3 }}\n',
        ))
        checked = volsafe("config", "check", "--json")
        assert checked.code == 0, checked.err
        (job,) = json.loads(checked.out)
        assert job["job"] == "shop" and job["projects"] == [project] and job["stop_containers"] is True

        # -- back up the project with --stop: each container stops once, dependents first -------------------
        since = time.time()
        backed = volsafe("backup", "--project", project, "--stop", "--to", "nas", "--json")
        assert backed.code == 0, backed.err
        assert sorted(r["volume"] for r in json.loads(backed.out)) == sorted([db_volume, files_volume])
        assert events(docker_host, since, [db, api]) == [
            ("stop", api.name), ("stop", db.name), ("start", db.name), ("start", api.name)
        ]
        assert [state_of(docker_host, c) for c in (db, api)] == ["running", "running"]
        listed = volsafe("list", "--json")  # the config's backend, without --from
        assert listed.code == 0, listed.err
        assert sorted(r["volume"] for r in json.loads(listed.out)) == sorted([db_volume, files_volume])
        verified = volsafe("verify", "--all")  # what a cron check runs
        assert verified.code == 0, verified.err
        assert verified.out.count("ok ") == 2, verified.out

        # -- restore db under another name: the same tree, and it does not join the project --------------------
        restored = volsafe("restore", db_volume, "--to-volume", copy)
        assert restored.code == 0, restored.err
        assert snapshot(docker_host, helper_image, copy) == db_tree
        labels = docker_host.api.inspect_volume(copy)["Labels"] or {}
        assert not [k for k in labels if k.startswith("com.docker.compose.")], labels

        # -- restore db in place while the app runs: refused naming the containers, then --stop ---------------
        run_in_volume(docker_host, helper_image, db_volume, "echo written-after-the-backup > /v/marker")
        changed = snapshot(docker_host, helper_image, db_volume)
        since = time.time()
        refused = volsafe("restore", db_volume, "--force")
        assert refused.code == 1
        (line,) = [text for text in refused.err.splitlines() if text.startswith("volsafe: error:")]
        assert db.name in line and api.name in line and "--stop" in line, line
        assert snapshot(docker_host, helper_image, db_volume) == changed  # untouched
        assert events(docker_host, since, [db, api]) == []
        replaced = volsafe("restore", db_volume, "--force", "--stop")
        assert replaced.code == 0, replaced.err
        assert snapshot(docker_host, helper_image, db_volume) == db_tree
        assert [state_of(docker_host, c) for c in (db, api)] == ["running", "running"]
        assert docker_host.api.inspect_volume(db_volume)["Labels"]["com.docker.compose.project"] == project

        # -- migrate files to a second host that lacks the helper image ---------------------------------------
        with without_image(target, helper_image):  # the second daemon is shared by the session: it gets it back
            migrated = volsafe("migrate", files_volume, "--to-host", second_daemon.unix_url, "--stop", "--json")
            assert migrated.code == 0, migrated.err
            assert json.loads(migrated.out)["verified"] is True
            assert f"copying helper image {helper_image}" in migrated.err
            assert snapshot(target, helper_image, files_volume) == files_tree
            assert [state_of(docker_host, c) for c in (db, api)] == ["running", "running"]

        # -- the scheduled job, run once by hand; then /metrics from the scheduler ----------------------------
        since = time.time()
        ran = volsafe("jobs", "run", "shop", "--config", str(config))
        assert ran.code == 0, ran.err
        assert sorted(events(docker_host, since, [db, api])) == sorted(
            [("stop", api.name), ("stop", db.name), ("start", db.name), ("start", api.name)]
        )
        status = json.loads(status_file.read_text())["jobs"]["shop"]
        finished = datetime.fromisoformat(status["last_success"]["finished"]).timestamp()
        assert finished != int(finished)  # sub-second precision recorded: the metric must carry it

        server = volsafe_process("run", "--config", str(config))
        try:
            code, metrics = _scrape(port, "/metrics", time.monotonic() + 60)
            health, _ = _scrape(port, "/health", time.monotonic() + 10)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                _out, err = server.communicate(timeout=30)
            except Exception:
                server.kill()
                server.communicate()
                raise
        assert server.returncode == 0, err
        assert (code, health) == (200, 200)
        (value,) = re.findall(r'^volsafe_job_last_success_timestamp_seconds\{job="shop"\} (\S+)$', metrics, re.MULTILINE)
        assert "e" not in value.lower() and float(value) == finished, value  # full precision, not 1.79604e+09
        assert abs(float(value) - time.time()) < 600
        (stored,) = re.findall(r'^volsafe_job_last_bytes\{job="shop"\} (\S+)$', metrics, re.MULTILINE)
        assert stored.isdigit() and int(stored) == status["last_run"]["bytes"] > 0
    finally:
        if target.volume_exists(files_volume):
            target.api.remove_volume(files_volume, force=True)
