"""Two Docker hosts sharing one store (a directory, and moto's S3): each host's retention keeps the
other's backups, ``restore VOLUME`` on a host gets its own data, ``status`` shows both hosts and
``volumes`` counts only this host's backups.

The second daemon is another host as Docker tells them apart (its own daemon ID and Name, see
tests/support/second_daemon.py); backups record each daemon's Name, with no host name configured.
Only the "third host" that has no backups of its own is named with VOLSAFE_HOST_NAME (on B's daemon).
"""

from __future__ import annotations

import json
import time

import docker
import pytest

from tests.support.volume_tree import run_in_volume, snapshot

pytestmark = pytest.mark.docker


@pytest.fixture(params=["dir", "s3"])
def shared_store(request, tmp_path):
    """(URL for --from/--to, the [backends.shared] table that names the same store)."""
    if request.param == "dir":
        path = tmp_path / "shared"
        return str(path), f'type = "local"\npath = "{path}"\n'
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket}/fleet", f'type = "s3"\nbucket = "{bucket}"\nprefix = "fleet"\n'


def _drop(host, *names: str) -> None:
    for name in names:
        try:
            host.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass


def test_two_hosts_share_one_store(
    docker_host, helper_image, volumes, second_daemon, volsafe, monkeypatch, tmp_path, shared_store
):
    monkeypatch.delenv("VOLSAFE_HOST_NAME", raising=False)
    store, backend_table = shared_store
    on_b = ("--host", second_daemon.unix_url)
    host_a, host_b = docker_host.client.info()["Name"], second_daemon.name
    assert host_a and host_a != host_b == second_daemon.host.client.info()["Name"]
    db = volumes("db")  # the same name on both hosts, unique per run
    restored = volumes("restored")
    docker_host.api.create_volume(db)
    second_daemon.host.api.create_volume(db)
    run_in_volume(docker_host, helper_image, db, "echo A-data > /v/who")
    run_in_volume(
        second_daemon.host, helper_image, db,
        "mkdir -p /v/d/e && echo B-data > /v/who && head -c 300000 /dev/urandom > /v/d/blob && ln -s ../who /v/d/e/link"
        " && chmod 0640 /v/d/blob && chown 33:44 /v/who",
    )

    def hosts_of() -> list[str]:
        listed = volsafe("list", db, "--from", store, "--json")
        assert listed.code == 0, listed.err
        return sorted(r["source_host"] for r in json.loads(listed.out))

    try:
        # B backs up twice, then A twice: A's are the newest in the store.
        for _ in range(2):
            made = volsafe(*on_b, "backup", db, "--to", store)
            assert made.code == 0, made.err
        for _ in range(2):
            made = volsafe("backup", db, "--to", store)
            assert made.code == 0, made.err
        assert hosts_of() == sorted([host_a, host_a, host_b, host_b])
        table = volsafe("list", db, "--from", store)
        lines = table.out.splitlines()
        assert lines[0].split()[:3] == ["ID", "VOLUME", "HOST"]
        assert sorted(line.split()[2] for line in lines[1:]) == sorted([host_a, host_a, host_b, host_b])

        # A's prune touches A's backups only.
        pruned = volsafe("prune", db, "--from", store, "--keep-last", "1")
        assert pruned.code == 0, pruned.err
        assert hosts_of() == sorted([host_a, host_b, host_b])
        a_done = time.time()

        # B's job (run once) backs up, then its retention prunes B's own backups and leaves A's.
        config = tmp_path / "b.toml"
        config.write_text(
            f'[health]\nstatus_file = "{tmp_path / "status.json"}"\n[backends.shared]\n{backend_table}'
            f'[jobs.nightly]\nschedule = "@daily"\nvolumes = ["{db}"]\nbackends = ["shared"]\nretention = {{ keep_last = 1 }}\n'
        )
        while time.time() < a_done + 3:  # B's newest must be seconds younger than A's, for --max-age below
            time.sleep(0.2)
        job = volsafe(*on_b, "--config", str(config), "jobs", "run", "nightly", "--json")
        assert job.code == 0, job.err
        summary = json.loads(job.out)
        assert summary["host"] == host_b and summary["pruned"] == 2
        assert hosts_of() == sorted([host_a, host_b])

        # restore db on B gets B's data (every entry: content, modes, owners, link), though A's backup is newer.
        back = volsafe(*on_b, "restore", db, "--from", store, "--to-volume", restored)
        assert back.code == 0, back.err
        original, _ = snapshot(second_daemon.host, helper_image, db)
        copy, _ = snapshot(second_daemon.host, helper_image, restored)
        assert copy == original and copy["who"].uid == 33
        # And on A, A's.
        back = volsafe("restore", db, "--from", store, "--to-volume", restored)
        assert back.code == 0, back.err
        assert run_in_volume(docker_host, helper_image, restored, "cat /v/who") == "A-data\n"

        # A third host (a name given on B's daemon) has none of its own and two hosts to choose from: it asks.
        _drop(second_daemon.host, restored)
        monkeypatch.setenv("VOLSAFE_HOST_NAME", "vs-third-host")
        asked = volsafe(*on_b, "restore", db, "--from", store, "--to-volume", restored)
        assert asked.code == 2 and f"hosts {', '.join(sorted([host_a, host_b]))}" in asked.err and "--source-host" in asked.err
        chosen = volsafe(*on_b, "restore", db, "--from", store, "--to-volume", restored, "--source-host", host_a)
        assert chosen.code == 0, chosen.err
        assert run_in_volume(second_daemon.host, helper_image, restored, "cat /v/who") == "A-data\n"
        monkeypatch.delenv("VOLSAFE_HOST_NAME")

        # status shows both hosts, one row each; exit 1 when one host's newest is older than --max-age.
        status = volsafe("status", "--from", store, "--json")
        assert status.code == 0, status.err
        rows = {r["source_host"]: r for r in json.loads(status.out) if r["volume"] == db}
        assert sorted(rows) == sorted([host_a, host_b])
        assert [(rows[h]["count"], rows[h]["stale"]) for h in (host_a, host_b)] == [(1, False), (1, False)]
        age_a, age_b = rows[host_a]["age_seconds"], rows[host_b]["age_seconds"]
        assert age_a >= age_b + 2
        between = f"{age_b + 1}s"  # A's newest is older than this, B's is not
        stale = volsafe(*on_b, "status", "--from", store, "--max-age", between, "--json")
        assert stale.code == 1
        flags = {r["source_host"]: r["stale"] for r in json.loads(stale.out) if r["volume"] == db}
        assert flags == {host_a: True, host_b: False}
        text = volsafe("status", "--from", store, "--max-age", between)
        assert text.code == 1 and host_a in text.out and host_b in text.out
    finally:
        _drop(second_daemon.host, db, restored)


def test_volumes_reports_this_hosts_backups(docker_host, helper_image, volumes, second_daemon, volsafe, monkeypatch, tmp_path):
    """``volumes`` on B says "never" while only A has backed up a volume of the same name, then B's own."""
    monkeypatch.delenv("VOLSAFE_HOST_NAME", raising=False)
    store = str(tmp_path / "shared")
    on_b = ("--host", second_daemon.unix_url)
    db = volumes("db")
    docker_host.api.create_volume(db)
    second_daemon.host.api.create_volume(db)

    def newest_on_b() -> tuple[str | None, bool]:
        result = volsafe(*on_b, "volumes", "--from", store, "--json")
        assert result.code == 0, result.err
        row = next(r for r in json.loads(result.out) if r["volume"] == db)
        return row["backups"][0]["newest_id"], row["stale"]

    def backup(*args: str) -> str:
        made = volsafe(*args, "backup", db, "--to", store, "--json")
        assert made.code == 0, made.err
        return json.loads(made.out)[0]["id"]

    try:
        backup()  # A's
        assert newest_on_b() == (None, True)  # before: A's backup, and not stale
        mine = backup(*on_b)
        backup()  # A's again, newer than B's
        assert newest_on_b() == (mine, False)
        table = volsafe(*on_b, "volumes", "--from", store, "--max-age", "1h")
        assert table.code == 0 and next(line for line in table.out.splitlines() if line.startswith(db + " ")).endswith("ago")
    finally:
        _drop(second_daemon.host, db)


def test_restore_project_follows_the_host_rule(docker_host, helper_image, volumes, second_daemon, volsafe, monkeypatch, tmp_path):
    """``restore --project`` on B restores B's backups of the project (A's are newer), asks a third host
    which host, and takes --source-host."""
    monkeypatch.delenv("VOLSAFE_HOST_NAME", raising=False)
    store = str(tmp_path / "shared")
    on_b = ("--host", second_daemon.unix_url)
    host_a = docker_host.client.info()["Name"]
    db = volumes("pdb")
    project = f"{db}-proj"
    labels = {"com.docker.compose.project": project}
    docker_host.api.create_volume(db, labels=labels)
    second_daemon.host.api.create_volume(db, labels=labels)
    run_in_volume(docker_host, helper_image, db, "echo A-data > /v/who")
    run_in_volume(second_daemon.host, helper_image, db, "echo B-data > /v/who")
    try:
        assert volsafe(*on_b, "backup", db, "--to", store).code == 0
        assert volsafe("backup", db, "--to", store).code == 0  # the newest
        _drop(second_daemon.host, db)  # B lost it

        back = volsafe(*on_b, "restore", "--project", project, "--from", store)
        assert back.code == 0, back.err
        assert back.out.split() == [db]
        assert run_in_volume(second_daemon.host, helper_image, db, "cat /v/who") == "B-data\n"
        _drop(second_daemon.host, db)

        monkeypatch.setenv("VOLSAFE_HOST_NAME", "vs-third-host")
        asked = volsafe(*on_b, "restore", "--project", project, "--from", store)
        assert asked.code == 2 and "hosts " in asked.err and host_a in asked.err and second_daemon.name in asked.err
        assert "--source-host" in asked.err and not second_daemon.host.volume_exists(db)
        chosen = volsafe(*on_b, "restore", "--project", project, "--from", store, "--source-host", host_a)
        assert chosen.code == 0, chosen.err
        assert run_in_volume(second_daemon.host, helper_image, db, "cat /v/who") == "A-data\n"
    finally:
        _drop(second_daemon.host, db)
