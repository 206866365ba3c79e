"""A new user's walk through the README, as one test on the real daemon (issue 18, "done when").

volsafe is installed; the user writes a volsafe.toml next to their Compose project (a backend "nas",
a scheduled job for the project), checks it, backs the project up with --stop, restores one volume
under another name, restores it in place while the app runs, migrates a volume to a second host
that lacks the helper image, runs the job by hand and scrapes /metrics from ``volsafe run``.
Everything goes through the CLI, as the user types it; Docker's own events and a read-back of each
volume's tree are the witnesses.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import time
import urllib.error
import urllib.request
from datetime import datetime

import docker
import pytest

from backup.docker.helper_image import build_helper_image
from tests.e2e.test_consistency_e2e import app, events, private_state, state_of  # noqa: F401 (fixtures)
from tests.support.second_daemon import free_port
from tests.support.volume_tree import fill_tricky, run_in_volume, snapshot

pytestmark = pytest.mark.docker


def _present(host, image: str) -> bool:
    try:
        host.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    return True


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
    docker_host, helper_image, volumes, app, second_daemon, volsafe, volsafe_process, tmp_path, monkeypatch, private_state  # noqa: F811
):
    # -- a Compose project "shop": volumes db and files, service db, service api (depends on db) ----------
    project = f"vswalk{secrets.token_hex(3)}"
    db_volume, files_volume, copy = volumes("db"), volumes("files"), volumes("db-old")
    for volume, short in ((db_volume, "db"), (files_volume, "files")):
        docker_host.api.create_volume(
            volume, labels={"com.docker.compose.project": project, "com.docker.compose.volume": short, "com.docker.compose.version": "2.29.0"}
        )
    fill_tricky(docker_host, helper_image, db_volume)
    run_in_volume(docker_host, helper_image, files_volume, "mkdir -p /v/img && head -c 300000 /dev/urandom > /v/img/a.png")
    db_tree, files_tree = snapshot(docker_host, helper_image, db_volume), snapshot(docker_host, helper_image, files_volume)
    compose = {"com.docker.compose.project": project}
    db = app(db_volume, "db", **compose, **{"com.docker.compose.service": "db"})
    api = docker_host.client.containers.run(
        helper_image, ["sleep", "3600"], name=f"vstest-app-api-{secrets.token_hex(3)}",
        labels={**compose, "com.docker.compose.service": "api", "com.docker.compose.depends_on": "db:service_started:false"},
        volumes={db_volume: {"bind": "/data", "mode": "rw"}, files_volume: {"bind": "/files", "mode": "rw"}},
        network_mode="none", stop_signal="SIGKILL", detach=True,
    )
    target = second_daemon.host
    port = free_port()
    try:
        # -- the user's volsafe.toml, found in the working directory -----------------------------------------
        monkeypatch.chdir(tmp_path)
        nas = tmp_path / "nas"
        status_file = tmp_path / "status.json"
        config = tmp_path / "volsafe.toml"
        config.write_text(f"""
[health]
status_file = "{status_file}"
listen = "127.0.0.1:{port}"

[backends.nas]
type = "local"
path = "{nas}"

[jobs.shop]
projects = ["{project}"]
schedule = "30 2 * * *"
backends = ["nas"]
stop_containers = true
retention = {{ keep_last = 3 }}
""")
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
        target.api.remove_image(helper_image, force=True)
        assert not _present(target, helper_image)
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
        with contextlib.suppress(docker.errors.NotFound):
            docker_host.api.remove_container(api.id, force=True)
        if target.volume_exists(files_volume):
            target.api.remove_volume(files_volume, force=True)
        if not _present(target, helper_image):  # the second daemon is shared by the session
            build_helper_image(target, tag=helper_image)
