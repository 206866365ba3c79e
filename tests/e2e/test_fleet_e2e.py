"""Two Docker hosts sharing one store (a directory, and moto's S3): each host's retention keeps the
other's backups, ``restore VOLUME`` on a host gets its own data, and ``status`` shows both hosts.

The second daemon shares /etc/docker with the first, so both report the same ID and Name; each
invocation names its host with VOLSAFE_HOST_NAME, as an operator would give a container its
node's name. (That the daemon's Name is the default is checked once, below.)
"""

from __future__ import annotations

import json

import docker
import pytest

from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker


@pytest.fixture(params=["dir", "s3"])
def shared_store(request, tmp_path):
    """(URL for --from/--to, the [backends.shared] table that names the same store)."""
    if request.param == "dir":
        path = tmp_path / "shared"
        return str(path), f'type = "local"\npath = "{path}"\n'
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket}/fleet", f'type = "s3"\nbucket = "{bucket}"\nprefix = "fleet"\n'


def test_two_hosts_share_one_store(
    docker_host, helper_image, volumes, second_daemon, volsafe, monkeypatch, tmp_path, shared_store
):
    store, backend_table = shared_store
    b_url = second_daemon.unix_url
    db = volumes("db")  # the same name on both hosts
    restored = volumes("restored")
    docker_host.api.create_volume(db)
    second_daemon.host.api.create_volume(db)
    run_in_volume(docker_host, helper_image, db, "echo A-data > /v/who")
    run_in_volume(second_daemon.host, helper_image, db, "echo B-data > /v/who")

    def on(host: str, *args: str):
        monkeypatch.setenv("VOLSAFE_HOST_NAME", host)
        return volsafe(*args)

    def hosts_of(*args: str) -> list[tuple[str, str]]:
        listed = on("host-a", "list", db, "--from", store, "--json", *args)
        assert listed.code == 0, listed.err
        return [(r["source_host"], r["id"]) for r in json.loads(listed.out)]

    try:
        # Without a name configured, a backup records the daemon's Name.
        monkeypatch.delenv("VOLSAFE_HOST_NAME", raising=False)
        plain = volsafe("backup", db, "--to", str(tmp_path / "plain"), "--json")
        assert plain.code == 0, plain.err
        assert json.loads(plain.out)[0]["source_host"] == docker_host.client.info()["Name"] != ""

        # B backs up twice, then A twice: A's are the newest in the store.
        for _ in range(2):
            made = on("host-b", "--host", b_url, "backup", db, "--to", store)
            assert made.code == 0, made.err
        for _ in range(2):
            made = on("host-a", "backup", db, "--to", store)
            assert made.code == 0, made.err
        assert sorted(h for h, _ in hosts_of()) == ["host-a", "host-a", "host-b", "host-b"]
        table = on("host-a", "list", db, "--from", store)
        assert table.out.splitlines()[0].split()[:3] == ["ID", "VOLUME", "HOST"]

        # A's prune touches A's backups only (before this change it removed all of B's).
        pruned = on("host-a", "prune", db, "--from", store, "--keep-last", "1")
        assert pruned.code == 0, pruned.err
        assert sorted(h for h, _ in hosts_of()) == ["host-a", "host-b", "host-b"]

        # B's scheduled job prunes B's own backups after its run, and leaves A's.
        config = tmp_path / "b.toml"
        config.write_text(
            f'[health]\nstatus_file = "{tmp_path / "status.json"}"\n[backends.shared]\n{backend_table}'
            f'[jobs.nightly]\nschedule = "@daily"\nvolumes = ["{db}"]\nbackends = ["shared"]\nretention = {{ keep_last = 1 }}\n'
        )
        job = on("host-b", "--host", b_url, "--config", str(config), "jobs", "run", "nightly", "--json")
        assert job.code == 0, job.err
        summary = json.loads(job.out)
        assert summary["host"] == "host-b" and summary["pruned"] == 2
        assert sorted(h for h, _ in hosts_of()) == ["host-a", "host-b"]

        # restore db on B gets B's data, though A's backup is newer.
        back = on("host-b", "--host", b_url, "restore", db, "--from", store, "--to-volume", restored)
        assert back.code == 0, back.err
        try:
            assert run_in_volume(second_daemon.host, helper_image, restored, "cat /v/who") == "B-data\n"
        finally:
            try:
                second_daemon.host.api.remove_volume(restored, force=True)
            except docker.errors.NotFound:
                pass

        # A new host C (on B's daemon) has none of its own and two hosts to choose from: it asks.
        asked = on("host-c", "--host", b_url, "restore", db, "--from", store, "--to-volume", restored)
        assert asked.code == 2 and "hosts host-a, host-b" in asked.err and "--source-host" in asked.err
        chosen = on("host-c", "--host", b_url, "restore", db, "--from", store, "--to-volume", restored, "--source-host", "host-a")
        assert chosen.code == 0, chosen.err
        assert run_in_volume(second_daemon.host, helper_image, restored, "cat /v/who") == "A-data\n"

        # status shows both hosts, one row each.
        status = on("host-a", "status", "--from", store, "--json")
        assert status.code == 0, status.err
        rows = [(r["source_host"], r["volume"], r["count"], r["stale"]) for r in json.loads(status.out) if r["volume"] == db]
        assert rows == [("host-a", db, 1, False), ("host-b", db, 1, False)]
    finally:
        for name in (db, restored):
            try:
                second_daemon.host.api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                pass
