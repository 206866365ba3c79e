"""``volsafe migrate`` end to end, between the test daemon and a second real dockerd on this machine."""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from backup.actions import migrate as migrate_action
from tests.support.volume_tree import TRICKY_SCRIPT, run_in_volume, snapshot

pytestmark = pytest.mark.docker

LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.volume": "data", "tier": "db"}


def tricky_volume(host, image, name, labels=None) -> None:
    """Create ``name`` with ``labels`` and fill it with every kind of entry the fidelity rules name."""
    host.api.create_volume(name, labels=labels)
    run_in_volume(host, image, name, TRICKY_SCRIPT)


def migrated(result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_tricky_volume_arrives_identical_with_labels(docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe):
    name = volumes("mig")
    tricky_volume(docker_host, helper_image, name, LABELS)
    before = snapshot(docker_host, helper_image, name)

    result = migrated(volsafe("migrate", name, "--to-host", second_daemon.unix_url, "--json"))
    try:
        assert result["verified"] is True and result["mode"] == "direct"
        (vol,) = result["volumes"]
        assert vol["target_volume"] == name and vol["digest_sent"] == vol["digest_received"] and vol["digest"] == "md5" and vol["created_volume"]
        assert snapshot(second_daemon.host, helper_image, name) == before
        assert second_daemon.host.api.inspect_volume(name)["Labels"] == LABELS
        assert snapshot(docker_host, helper_image, name) == before  # the source is unchanged
    finally:
        second_daemon.host.api.remove_volume(name, force=True)


def test_rename_over_tcp(docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe):
    source, renamed = volumes("tcp"), target_volumes("renamed")
    tricky_volume(docker_host, helper_image, source, {"tier": "web"})
    before = snapshot(docker_host, helper_image, source)

    result = migrated(
        volsafe("migrate", source, "--to-host", second_daemon.tcp_url, *second_daemon.tls_options, "--to-volume", renamed, "--json")
    )
    assert result["verified"] is True and result["volumes"][0]["target_volume"] == renamed
    assert snapshot(second_daemon.host, helper_image, renamed) == before
    assert second_daemon.host.api.inspect_volume(renamed)["Labels"] == {"tier": "web"}
    assert not second_daemon.host.volume_exists(source)


def test_refused_non_empty_target_is_untouched(docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe):
    source, target = volumes("src"), target_volumes("busy")
    tricky_volume(docker_host, helper_image, source)
    second_daemon.host.api.create_volume(target, labels={"keep": "me"})
    run_in_volume(second_daemon.host, helper_image, target, "echo precious > /v/data.txt")
    before = snapshot(second_daemon.host, helper_image, target)

    refused = volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target)
    assert refused.code == 1
    assert f"volsafe: error: volume '{target}' exists and is not empty; use --force" in refused.err
    assert snapshot(second_daemon.host, helper_image, target) == before
    assert second_daemon.host.api.inspect_volume(target)["Labels"] == {"keep": "me"}


@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "existing-target-force"])
def test_killed_target_helper_leaves_target_as_it_was(
    docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe, monkeypatch, existing
):
    source, target = volumes("kill"), target_volumes("killed")
    tricky_volume(docker_host, helper_image, source)
    run_in_volume(docker_host, helper_image, source, "head -c 8000000 /dev/urandom > /v/big.bin")
    before = None
    if existing:
        second_daemon.host.api.create_volume(target)
        run_in_volume(second_daemon.host, helper_image, target, "echo old > /v/old.txt && touch -d '2005-01-01' /v")
        before = snapshot(second_daemon.host, helper_image, target)

    real_stream = migrate_action.volume_tar
    killed = []

    def stream_then_kill(*args, **kwargs):
        """The source stream, with the target helper killed once the first chunk went out."""
        with real_stream(*args, **kwargs) as chunks:
            def chunks_with_kill():
                for chunk in chunks:
                    yield chunk
                    if not killed:
                        helpers = second_daemon.host.api.containers(
                            filters={"label": ["io.volsafe.role=migrate", f"io.volsafe.volume={target}"]}
                        )
                        assert len(helpers) == 1
                        second_daemon.host.api.kill(helpers[0]["Id"])
                        killed.append(helpers[0]["Id"])
            yield chunks_with_kill()

    monkeypatch.setattr(migrate_action, "volume_tar", contextlib.contextmanager(stream_then_kill))
    args = ["migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target] + (["--force"] if existing else [])
    started = time.monotonic()
    failed = volsafe(*args)
    assert killed and failed.code == 1, failed.err
    # Noticed when the helper's output stream ends, not after the 300 s socket timeout.
    assert time.monotonic() - started < 60
    assert "volsafe: error:" in failed.err
    if existing:
        assert snapshot(second_daemon.host, helper_image, target) == before
    else:
        assert not second_daemon.host.volume_exists(target)


def test_compose_project_moves_as_a_unit(docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe):
    project = volumes("proj")  # a unique project name; no volume is created under it
    db, web, other = volumes("db"), volumes("web"), volumes("other")
    for name, service in ((db, "db"), (web, "web")):
        tricky_volume(docker_host, helper_image, name, {"com.docker.compose.project": project, "com.docker.compose.volume": service})
    docker_host.api.create_volume(other, labels={"com.docker.compose.project": project + "-not"})
    # A non-empty target for one volume refuses the whole project before anything moves.
    second_daemon.host.api.create_volume(web)
    run_in_volume(second_daemon.host, helper_image, web, "echo in-the-way > /v/x")
    try:
        refused = volsafe("migrate", "--project", project, "--to-host", second_daemon.unix_url)
        assert refused.code == 1 and "not empty" in refused.err
        assert not second_daemon.host.volume_exists(db)

        result = migrated(volsafe("migrate", "--project", project, "--to-host", second_daemon.unix_url, "--force", "--json"))
        assert sorted(v["volume"] for v in result["volumes"]) == sorted([db, web]) and result["verified"] is True
        for name in (db, web):
            assert snapshot(second_daemon.host, helper_image, name) == snapshot(docker_host, helper_image, name)
        # A created target gets the source's labels (so Compose adopts it); an existing one keeps its own.
        assert second_daemon.host.api.inspect_volume(db)["Labels"] == docker_host.api.inspect_volume(db)["Labels"]
        assert not second_daemon.host.volume_exists(other)
    finally:
        for name in (db, web):
            if second_daemon.host.volume_exists(name):
                second_daemon.host.api.remove_volume(name, force=True)


def test_over_ssh(docker_host, helper_image, volumes, second_daemon, ssh_server, target_volumes, volsafe, monkeypatch):
    source, target = volumes("ssh"), target_volumes("viassh")
    tricky_volume(docker_host, helper_image, source)
    before = snapshot(docker_host, helper_image, source)
    monkeypatch.setenv("HOME", str(ssh_server.home))  # the SDK's paramiko reads ~/.ssh: the key and known_hosts

    result = migrated(volsafe("migrate", source, "--to-host", ssh_server.url, "--to-volume", target, "--json"))
    assert result["verified"] is True and result["target_host"] == ssh_server.url
    assert snapshot(second_daemon.host, helper_image, target) == before


def test_via_s3(docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe, bucket):
    source, target = volumes("via"), target_volumes("fromvia")
    tricky_volume(docker_host, helper_image, source, {"tier": "cache"})
    before = snapshot(docker_host, helper_image, source)
    url = f"s3://{bucket}/handover"

    result = migrated(volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target,
                              "--via", url, "--json"))
    assert result["mode"] == "via" and result["verified"] is True
    assert snapshot(second_daemon.host, helper_image, target) == before
    assert second_daemon.host.api.inspect_volume(target)["Labels"] == {"tier": "cache"}
    (listed,) = json.loads(volsafe("list", source, "--from", url, "--json").out)
    assert listed["id"] == result["volumes"][0]["backup_id"]
    assert listed["source_host"] == docker_host.name


def test_stop_restarts_and_no_restart_leaves_stopped(docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe):
    source, target = volumes("app"), target_volumes("appdst")
    tricky_volume(docker_host, helper_image, source)
    app = docker_host.client.containers.run(
        helper_image, ["sleep", "3600"], detach=True, network_mode="none", volumes={source: {"bind": "/data"}},
        name=f"{source}-app", stop_signal="SIGKILL",
    )
    try:
        first_start = app.attrs["State"]["StartedAt"] if app.reload() is None else None
        result = migrated(volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target,
                                  "--stop", "--json"))
        assert result["left_stopped"] == []
        app.reload()
        assert app.status == "running"
        assert app.attrs["State"]["StartedAt"] != first_start  # it was stopped and started again

        cut = migrated(volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target,
                               "--stop", "--no-restart", "--force", "--json"))
        assert cut["left_stopped"] == [app.name] and cut["verified"] is True
        app.reload()
        assert app.status == "exited"
    finally:
        app.remove(force=True)


def test_backup_here_restore_on_a_tls_daemon(docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe, monkeypatch, tmp_path):
    """The split handover: back up on host A, restore on host B reached over tcp:// with TLS."""
    source, target = volumes("tls"), target_volumes("tls")
    tricky_volume(docker_host, helper_image, source, {"tier": "db"})
    before = snapshot(docker_host, helper_image, source)
    assert volsafe("backup", source, "--to", str(tmp_path)).code == 0

    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(second_daemon.root / "tls"))
    restored = volsafe("--host", second_daemon.tcp_url, "restore", source, "--from", str(tmp_path), "--to-volume", target)
    assert restored.code == 0, restored.err
    assert snapshot(second_daemon.host, helper_image, target) == before
    assert second_daemon.host.api.inspect_volume(target)["Labels"] == {"tier": "db"}


def test_direct_migration_waits_for_another_volsafe_using_the_volume(
    docker_host, helper_image, volumes, second_daemon, target_volumes, volsafe
):
    from backup.docker.locks import volume_lock

    source = volumes("locked")
    target = target_volumes("locked")
    tricky_volume(docker_host, helper_image, source)
    with volume_lock(docker_host, source, action="backup"):  # as a running backup holds it
        busy = volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target, "--lock-wait", "0.5")
    assert busy.code == 1
    assert f"volume '{source}' is busy" in busy.err and "backup" in busy.err
    assert not second_daemon.host.volume_exists(target)

    # Released: the same migration goes through. The same name on the second daemon is another lock.
    done = migrated(volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", target, "--json"))
    assert done["verified"] is True
