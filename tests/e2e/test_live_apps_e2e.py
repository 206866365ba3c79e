"""Live Compose apps on the real daemon (issue 18 items 9a-12, 15): one quiesce for a whole run,
restore into a volume a running container uses, Compose labels on renamed copies, restoring a whole
project, and ``backup --dry-run``. Docker's own events are the witness of what was stopped."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from tests.e2e.test_consistency_e2e import archive_names
from tests.support import apps
from tests.support.apps import compose_project, events, state_of
from tests.support.configs import job_config, job_table

pytestmark = pytest.mark.docker

app, private_state = apps.app, apps.private_state  # the shared fixtures; private_state is autouse


@pytest.fixture
def shop(docker_host, helper_image, volumes, app):
    """A Compose-like project: volumes db and files (project labels as Compose sets them), a "db"
    service using db, and an "api" service (depends on db) using both."""
    shop = compose_project(docker_host, app, f"vsshop{secrets.token_hex(3)}", volumes("db"), volumes("files"))
    for volume, short in ((shop.db_volume, "db"), (shop.files_volume, "files")):
        small_volume_data(docker_host, helper_image, volume, short)
    return shop


def small_volume_data(host, image, volume, text) -> None:
    from tests.support.volume_tree import run_in_volume

    run_in_volume(host, image, volume, f"echo {text} > /v/file")


def test_stop_quiesces_once_for_a_two_volume_backup(docker_host, shop, volsafe, tmp_path):
    since = time.time()
    result = volsafe("backup", "--project", shop.project, "--stop", "--to", str(tmp_path / "b"), "--json")
    assert result.code == 0, result.err
    assert sorted(r["volume"] for r in json.loads(result.out)) == sorted([shop.db_volume, shop.files_volume])
    # Exactly one stop and one start per container: dependents first, back in reverse order.
    assert events(docker_host, since, [shop.db, shop.api]) == [
        ("stop", shop.api.name), ("stop", shop.db.name), ("start", shop.db.name), ("start", shop.api.name)
    ]
    assert [state_of(docker_host, c) for c in (shop.db, shop.api)] == ["running", "running"]
    assert "./file" in archive_names(tmp_path / "b", shop.db_volume)

    # Per-volume quiescing only when asked: the api (which uses both volumes) then goes down twice.
    since = time.time()
    each = volsafe("backup", "--project", shop.project, "--stop", "--quiesce-each", "--to", str(tmp_path / "c"))
    assert each.code == 0, each.err
    assert [action for action, name in events(docker_host, since, [shop.api])] == ["stop", "start", "stop", "start"]


def test_dry_run_says_what_would_happen_and_writes_nothing(docker_host, helper_image, shop, volsafe, tmp_path):
    docker_host.api.remove_container(shop.db.id, force=True)
    hooked = docker_host.client.containers.run(
        helper_image, ["sleep", "3600"], name=f"vstest-app-hooked-{secrets.token_hex(3)}",
        labels={"com.docker.compose.project": shop.project, "com.docker.compose.service": "db", "volsafe.hook.pre": "echo dumped > /data/dump"},
        volumes={shop.db_volume: {"bind": "/data", "mode": "rw"}}, network_mode="none", stop_signal="SIGKILL", detach=True,
    )
    try:
        target = tmp_path / "never"
        since = time.time()
        result = volsafe("backup", "--project", shop.project, "--stop", "--dry-run", "--to", str(target))
        assert result.code == 0, result.err
        assert shop.db_volume in result.out and shop.files_volume in result.out
        assert str(target) in result.out
        assert f"would stop, in this order: {shop.api.name}, {hooked.name}" in result.out
        assert f"would run pre-hook in {hooked.name}" in result.out and "echo dumped" in result.out
        # Nothing written, no container touched, the hook not run.
        assert not target.exists()
        assert events(docker_host, since, [shop.api, hooked]) == []
        # The pre-hook did not run: it would have left /data/dump.
        listing = docker_host.client.containers.run(
            helper_image, ["ls", "/data"], volumes={shop.db_volume: {"bind": "/data", "mode": "ro"}}, network_mode="none", remove=True
        )
        assert b"dump" not in listing
    finally:
        docker_host.api.remove_container(hooked.id, force=True)


def test_job_with_a_pre_hook_does_not_warn_and_a_job_without_names_its_keys(docker_host, shop, volsafe, tmp_path):
    config = tmp_path / "volsafe.toml"
    config.write_text(job_config(
        tmp_path, job="dumped", volumes=(shop.db_volume,), store=tmp_path / "b", status=False,
        job_keys=f'hook_container = "{shop.db.name}"\npre_hook = "echo dumped > /data/dump"\n',
        extra=job_table("plain", volumes=(shop.db_volume,)),
    ))
    dumped = volsafe("jobs", "run", "dumped", "--config", str(config))
    assert dumped.code == 0, dumped.err
    assert "crash-consistent" not in dumped.err
    plain = volsafe("jobs", "run", "plain", "--config", str(config))
    assert plain.code == 0, plain.err
    assert "only crash-consistent" in plain.err
    assert "stop_containers or pause_containers" in plain.err and "--stop" not in plain.err


def marker(host, image, volume) -> str:
    """Return /data/marker of ``volume`` ("" when absent), read by a throwaway container."""
    out = host.client.containers.run(
        image, ["sh", "-c", "cat /v/marker 2>/dev/null; true"], volumes={volume: {"bind": "/v", "mode": "ro"}}, network_mode="none", remove=True
    )
    return out.decode().strip()


def test_restore_into_a_volume_in_use_is_refused_and_stop_quiesces_it(docker_host, helper_image, shop, volsafe, tmp_path, private_state):
    from tests.support.volume_tree import run_in_volume

    store = str(tmp_path / "b")
    assert volsafe("backup", shop.db_volume, "--to", store).code == 0
    run_in_volume(docker_host, helper_image, shop.db_volume, "echo after-backup > /v/marker")

    since = time.time()
    refused = volsafe("restore", shop.db_volume, "--force", "--from", store)
    assert refused.code == 1
    (line,) = [ln for ln in refused.err.splitlines() if ln.startswith("volsafe: error:")]
    assert shop.db.name in line and shop.api.name in line and "--stop" in line and "--pause" in line
    assert marker(docker_host, helper_image, shop.db_volume) == "after-backup"  # untouched
    assert events(docker_host, since, [shop.db, shop.api]) == []

    # A failing restore (corrupt archive) with --stop still brings the app back, and leaves no record.
    (archive,) = (tmp_path / "b" / shop.db_volume).glob("*.tar.zst")
    good = archive.read_bytes()
    archive.write_bytes(good[: len(good) // 2])
    since = time.time()
    failed = volsafe("restore", shop.db_volume, "--force", "--stop", "--from", store)
    assert failed.code != 0
    assert [state_of(docker_host, c) for c in (shop.db, shop.api)] == ["running", "running"]
    assert [a for a, _ in events(docker_host, since, [shop.db, shop.api])] == ["stop", "stop", "start", "start"]
    assert marker(docker_host, helper_image, shop.db_volume) == "after-backup"
    archive.write_bytes(good)

    since = time.time()
    done = volsafe("restore", shop.db_volume, "--force", "--stop", "--from", store)
    assert done.code == 0, done.err
    assert events(docker_host, since, [shop.db, shop.api]) == [
        ("stop", shop.api.name), ("stop", shop.db.name), ("start", shop.db.name), ("start", shop.api.name)
    ]
    assert marker(docker_host, helper_image, shop.db_volume) == ""  # the backup's contents
    assert [state_of(docker_host, c) for c in (shop.db, shop.api)] == ["running", "running"]
    assert not [p for p in private_state.rglob("*.json")]  # the crash record is gone

    since = time.time()
    paused = volsafe("restore", shop.db_volume, "--force", "--pause", "--from", store)
    assert paused.code == 0, paused.err
    assert sorted(a for a, _ in events(docker_host, since, [shop.db, shop.api])) == ["pause", "pause", "unpause", "unpause"]


def test_a_renamed_copy_does_not_join_the_compose_project(docker_host, shop, volumes, volsafe, tmp_path):
    store = str(tmp_path / "b")
    assert volsafe("backup", shop.db_volume, "--to", store).code == 0
    copy, kept, moved = volumes("copy"), volumes("kept"), volumes("moved")
    assert volsafe("restore", shop.db_volume, "--to-volume", copy, "--from", store).code == 0
    labels = docker_host.api.inspect_volume(copy)["Labels"] or {}
    assert not [k for k in labels if k.startswith("com.docker.compose.")], labels
    # The project's next selection does not pick it up.
    listed = volsafe("backup", "--project", shop.project, "--dry-run", "--to", store)
    assert copy not in listed.out
    assert volsafe("restore", shop.db_volume, "--to-volume", kept, "--keep-compose-labels", "--from", store).code == 0
    assert docker_host.api.inspect_volume(kept)["Labels"]["com.docker.compose.project"] == shop.project

    migrated = volsafe("migrate", shop.db_volume, "--to-host", docker_host.url, "--to-volume", moved)
    assert migrated.code == 0, migrated.err
    labels = docker_host.api.inspect_volume(moved)["Labels"] or {}
    assert not [k for k in labels if k.startswith("com.docker.compose.")], labels


def test_restore_a_whole_project_after_down_v(docker_host, helper_image, shop, volsafe, tmp_path):
    store = str(tmp_path / "b")
    assert volsafe("backup", "--project", shop.project, "--stop", "--to", store).code == 0
    before = {v: docker_host.api.inspect_volume(v)["Labels"] for v in (shop.db_volume, shop.files_volume)}

    # Several REFs into the live app: one quiesce for both, one summary.
    since = time.time()
    both = volsafe("restore", shop.db_volume, f"{shop.files_volume}@latest", "--force", "--stop", "--from", store)
    assert both.code == 0, both.err
    assert events(docker_host, since, [shop.db, shop.api]) == [
        ("stop", shop.api.name), ("stop", shop.db.name), ("start", shop.db.name), ("start", shop.api.name)
    ]
    assert "restored 2 of 2 volume(s)" in both.err

    # docker compose down -v: containers and volumes gone.
    for container in (shop.api, shop.db):
        docker_host.api.remove_container(container.id, force=True)
    for volume in before:
        docker_host.api.remove_volume(volume)
    result = volsafe("restore", "--project", shop.project, "--from", store, "--json")
    assert result.code == 0, result.err
    restored = json.loads(result.out)
    assert sorted(r["restored_to"] for r in restored) == sorted(before)
    assert all(r["created_volume"] for r in restored)
    # What docker compose up checks before it adopts an existing volume: its project and volume labels.
    for volume, labels in before.items():
        assert docker_host.api.inspect_volume(volume)["Labels"] == labels
    assert marker_file(docker_host, helper_image, shop.db_volume) == "db"
    assert marker_file(docker_host, helper_image, shop.files_volume) == "files"

    nothing = volsafe("restore", "--project", "no-such-project", "--from", store)
    assert nothing.code == 1 and "no backups of Compose project 'no-such-project'" in nothing.err


def marker_file(host, image, volume) -> str:
    out = host.client.containers.run(image, ["cat", "/v/file"], volumes={volume: {"bind": "/v", "mode": "ro"}}, network_mode="none", remove=True)
    return out.decode().strip()
