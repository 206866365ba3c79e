"""``volsafe migrate`` to a daemon without the helper image, and its warning about a running app."""

from __future__ import annotations

import json

import pytest

from tests.support.apps import app_containers
from tests.support.helper_images import image_present, without_image
from tests.support.volume_tree import TRICKY_SCRIPT, run_in_volume, snapshot

pytestmark = pytest.mark.docker


@pytest.fixture
def target_without_helper_image(second_daemon, helper_image):
    """The second daemon with the helper image removed for the test; it has the image again afterwards,
    whatever happened (the second daemon is shared by the whole session)."""
    with without_image(second_daemon.host, helper_image):
        yield second_daemon


@pytest.fixture
def running_app(docker_host, helper_image):
    """Start a container that mounts a volume read-write and keeps running; removed afterwards."""
    with app_containers(docker_host, helper_image) as start:
        yield lambda volume: start(volume).name


@pytest.mark.parametrize("transport", ["tcp", "ssh"])
def test_migrate_ships_the_helper_image_to_a_target_without_it(
    docker_host, helper_image, volumes, target_without_helper_image, target_volumes, volsafe, request, monkeypatch, transport
):
    target = target_without_helper_image
    if transport == "ssh":
        ssh_server = request.getfixturevalue("ssh_server")
        monkeypatch.setenv("HOME", str(ssh_server.home))  # the SDK's paramiko reads ~/.ssh: the key and known_hosts
        where = [ssh_server.url]
    else:
        where = [target.tcp_url, *target.tls_options]
    name = volumes("ship")
    docker_host.api.create_volume(name)
    run_in_volume(docker_host, helper_image, name, TRICKY_SCRIPT)
    before = snapshot(docker_host, helper_image, name)
    try:
        result = volsafe("migrate", name, "--to-host", *where, "--json")
        assert result.code == 0, result.err
        assert json.loads(result.out)["verified"] is True
        assert f"volsafe: INFO: copying helper image {helper_image} from " in result.err and f"to {where[0]}" in result.err
        assert image_present(target.host, helper_image)  # it stays there for the next migration
        assert snapshot(target.host, helper_image, name) == before
    finally:
        target.host.api.remove_volume(name, force=True) if target.host.volume_exists(name) else None


def test_migrate_warns_about_a_running_container_as_backup_does(
    docker_host, helper_image, volumes, second_daemon, target_volumes, running_app, volsafe
):
    source, renamed = volumes("live"), target_volumes("live")
    docker_host.api.create_volume(source)
    run_in_volume(docker_host, helper_image, source, "echo hello > /v/data.txt")
    app = running_app(source)

    result = volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", renamed)
    assert result.code == 0, result.err
    assert (
        f"volsafe: WARNING: volume {source} is mounted read-write by running container(s) {app}: "
        "the migrated copy is only crash-consistent (use --stop)"
    ) in result.err

    again = target_volumes("stopped")
    quiet = volsafe("migrate", source, "--to-host", second_daemon.unix_url, "--to-volume", again, "--stop")
    assert quiet.code == 0, quiet.err
    assert "crash-consistent" not in quiet.err
    assert docker_host.api.inspect_container(app)["State"]["Running"]  # started again after --stop
