"""Several hosts sharing one store, without a daemon: host identity, per-host prune, HOST in list,
--source-host, and what VOLUME means when other hosts have backups of it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from backup.actions.prune import run_prune
from backup.archive.manifest import Manifest
from backup.archive.naming import BackupId, new_stamp
from backup.config.schema import parse_config
from backup.docker.host import DockerHost
from backup.errors import UsageError
from backup.jobs.retention import Policy
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup

NOW = datetime.now(timezone.utc)


def fake_backup(backend, volume: str, host: str, age_days: float) -> Manifest:
    created = NOW - timedelta(days=age_days)
    backup_id = BackupId(volume, new_stamp(created))
    manifest = Manifest(backup_id, created, {}, "local", {}, host, "id", "0", 10, 10, "0" * 64, 1)
    backend.save(backup_id.archive_key, [b"archive"])
    backend.save(backup_id.manifest_key, [manifest.to_json()])
    return manifest


def hosted(backend, volume: str, host: str, token: str) -> Manifest:
    """A real (verifiable, restorable) backup recorded as made on ``host``."""
    manifest = store_backup(backend, volume, make_tar(SAMPLE), stamp_token=token)
    backend.remove(manifest.backup_id.manifest_key)
    data = json.loads(manifest.to_json())
    data["source"]["hostname"] = host
    backend.save(manifest.backup_id.manifest_key, [json.dumps(data).encode()])
    return manifest


def ids(backend) -> set[str]:
    return {i.key.removesuffix(".json").replace("/", "@") for i in backend.list() if i.key.endswith(".json")}


@pytest.fixture
def store(tmp_path):
    return LocalBackend(tmp_path / "store")


@pytest.fixture
def on_host(monkeypatch):
    """Run the CLI as if on host NAME (VOLSAFE_HOST_NAME), with no config file around."""
    monkeypatch.delenv("VOLSAFE_CONFIG", raising=False)

    def use(name: str) -> None:
        monkeypatch.setenv("VOLSAFE_HOST_NAME", name)

    return use


# -- identity ----------------------------------------------------------------------------------


class FakeClient:
    def __init__(self, info):
        self._info = info

    def info(self):
        return self._info


def test_a_backup_is_recorded_under_the_daemons_name_unless_overridden():
    host = DockerHost(client=FakeClient({"Name": "node-7", "ID": "X"}), url="unix:///x")
    assert host.host_name == "node-7"
    host.host_name_override = "db-primary"
    assert host.host_name == "db-primary" and host.name == "node-7"


def test_config_key_and_environment_name_the_host(run, tmp_path, monkeypatch, store):
    from backup.archive.hosts import configured_host_name

    config = parse_config('[docker]\nhost_name = "from-config"\n', environ={})
    assert config.host_name == "from-config"
    assert configured_host_name(config.host_name, {}) == "from-config"
    assert configured_host_name(config.host_name, {"VOLSAFE_HOST_NAME": "from-env"}) == "from-env"
    assert configured_host_name(None, {}) is None
    with pytest.raises(Exception) as bad:
        parse_config('[docker]\nhost_name = "a b"\n', environ={})
    assert "host_name" in str(bad.value) and "invalid host name" in str(bad.value)
    with pytest.raises(UsageError):
        configured_host_name(None, {"VOLSAFE_HOST_NAME": "-x"})
    # The config's name decides which backups prune touches, with no daemon asked.
    fake_backup(store, "db", "from-config", 2)
    fake_backup(store, "db", "from-config", 1)
    (tmp_path / "volsafe.toml").write_text('[docker]\nhost_name = "from-config"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VOLSAFE_HOST_NAME", raising=False)
    monkeypatch.delenv("VOLSAFE_CONFIG", raising=False)
    code, out, err = run("prune", "--from", str(store.root), "--keep-last", "1", "--json")
    assert code == 0, err
    assert [r["action"] for r in json.loads(out)] == ["keep", "removed"]


# -- prune -------------------------------------------------------------------------------------


def test_retention_is_per_host_and_volume(store):
    a = [fake_backup(store, "db", "a", d) for d in (3, 2, 1)]
    b = [fake_backup(store, "db", "b", d) for d in (5, 4)]
    results = run_prune([store], Policy(keep_last=1), now=NOW, hosts=("a",))
    assert {r.manifest.source_hostname for r in results} == {"a"}
    assert ids(store) == {str(a[2].backup_id), *(str(m.backup_id) for m in b)}
    # Every host at once: still each on its own (b keeps its own newest, although a's is newer).
    results = run_prune([store], Policy(keep_last=1), now=NOW)
    assert ids(store) == {str(a[2].backup_id), str(b[1].backup_id)}


def test_prune_touches_only_this_hosts_backups_unless_told(run, store, on_host):
    a = [fake_backup(store, "db", "a", d) for d in (3, 2, 1)]
    b = [fake_backup(store, "db", "b", d) for d in (3, 2, 1)]
    old = [fake_backup(store, "db", "", d) for d in (9, 8)]  # no host recorded
    on_host("a")
    code, out, err = run("prune", "db", "--from", str(store.root), "--keep-last", "1")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["ACTION", "ID", "HOST"] and {r.split()[2] for r in rows} == {"a"}
    assert ids(store) == {str(a[2].backup_id), *(str(m.backup_id) for m in b + old)}

    code, out, err = run("prune", "--from", str(store.root), "--keep-last", "1", "--source-host", "b", "--json")
    assert code == 0, err
    assert {r["source_host"] for r in json.loads(out)} == {"b"}
    assert ids(store) == {str(a[2].backup_id), str(b[2].backup_id), *(str(m.backup_id) for m in old)}

    code, out, err = run("prune", "--from", str(store.root), "--keep-last", "1", "--all-hosts", "--json")
    assert code == 0, err
    assert ids(store) == {str(a[2].backup_id), str(b[2].backup_id), str(old[1].backup_id)}

    code, out, err = run("prune", "--from", str(store.root), "--keep-last", "1", "--all-hosts", "--source-host", "a")
    assert code == 2 and "not both" in err


# -- list --------------------------------------------------------------------------------------


def test_list_shows_the_host_and_selects_by_it(run, store, on_host):
    a = fake_backup(store, "db", "a", 1)
    b = fake_backup(store, "db", "b", 1)
    none = fake_backup(store, "db", "", 1)
    code, out, err = run("list", "--from", str(store.root))
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["ID", "VOLUME", "HOST"]
    assert {r.split()[0]: r.split()[2] for r in rows} == {str(a.backup_id): "a", str(b.backup_id): "b", str(none.backup_id): "(unrecorded)"}
    code, out, err = run("list", "--from", str(store.root), "--source-host", "b", "--source-host", "a", "--json")
    assert code == 0, err
    assert sorted((r["id"], r["source_host"]) for r in json.loads(out)) == sorted([(str(a.backup_id), "a"), (str(b.backup_id), "b")])
    code, out, err = run("list", "--from", str(store.root), "--source-host", "")
    assert code == 2 and "invalid host name" in err


# -- what VOLUME means -------------------------------------------------------------------------


def test_volume_means_this_hosts_newest(run, store, on_host):
    mine = hosted(store, "db", "a", "0001")
    theirs = hosted(store, "db", "b", "0002")  # newer (or the same second, with a later token)
    on_host("a")
    code, out, err = run("verify", "db", "--from", str(store.root), "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(mine.backup_id)]
    code, out, err = run("verify", "db", "--from", str(store.root), "--source-host", "b", "--json")
    assert [r["id"] for r in json.loads(out)] == [str(theirs.backup_id)]


def test_volume_falls_back_to_the_one_other_host_and_says_so(run, store, on_host):
    theirs = hosted(store, "db", "old-server", "0001")
    on_host("new-server")
    code, out, err = run("verify", "db", "--from", str(store.root), "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(theirs.backup_id)]
    assert "using host old-server's newest" in err and "this host (new-server)" in err


def test_volume_is_ambiguous_among_several_other_hosts(run, store, on_host):
    hosted(store, "db", "b", "0001")
    hosted(store, "db", "c", "0002")
    on_host("a")
    for command in ("verify", "restore"):
        code, out, err = run(command, "db", "--from", str(store.root))
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("volsafe: error: ")
        assert "hosts b, c" in err and "--source-host" in err


def test_source_host_selects_and_an_exact_id_is_unchanged(run, store, on_host):
    a = hosted(store, "db", "a", "0001")
    hosted(store, "db", "b", "0002")
    on_host("z")
    code, out, err = run("verify", "--all", "--from", str(store.root), "--source-host", "a", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(a.backup_id)]
    code, out, err = run("verify", str(a.backup_id), "--from", str(store.root), "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [str(a.backup_id)]
    code, out, err = run("verify", "db", "--from", str(store.root), "--source-host", "nope")
    assert code == 1 and "no backups of volume 'db' from host nope" in err and "there are backups from a, b" in err
    code, out, err = run("verify", "--all", "--from", str(store.root), "--source-host", "nope")
    assert (code, err) == (1, f"volsafe: error: no backups from host nope found in {store.url}\n")


# -- status ------------------------------------------------------------------------------------


def test_status_shows_one_row_per_host_and_volume_and_fails_when_stale(run, tmp_path, store):
    other = LocalBackend(tmp_path / "other")
    fake_backup(store, "db", "a", 0.1)
    fake_backup(store, "db", "a", 0.5)
    fake_backup(store, "db", "b", 3)  # b stopped backing up
    fake_backup(other, "db", "a", 0.2)
    fake_backup(store, "web", "", 0.1)
    code, out, err = run("status", "--from", str(store.root), "--from", str(other.root), "--json")
    assert code == 1, err
    rows = {(r["source_host"], r["volume"]): r for r in json.loads(out)}
    assert sorted(rows) == [("", "web"), ("a", "db"), ("b", "db")]
    assert (rows[("a", "db")]["count"], rows[("a", "db")]["stored_bytes"], rows[("a", "db")]["stale"]) == (3, 30, False)
    assert rows[("a", "db")]["backends"] == sorted([store.url, other.url])
    expected_age = 3 * 86400 + (datetime.now(timezone.utc) - NOW).total_seconds()  # NOW is the module's import time
    assert rows[("b", "db")]["stale"] and abs(rows[("b", "db")]["age_seconds"] - expected_age) < 60
    assert "1 stale" in err
    code, out, err = run("status", "--from", str(store.root), "--max-age", "4d")
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split() == ["HOST", "VOLUME", "NEWEST", "AGE", "BACKUPS", "STORED", "STATUS"]
    assert [(line.split()[0], line.split()[1], line.split()[-1]) for line in lines] == [
        ("(unrecorded)", "web", "ok"), ("a", "db", "ok"), ("b", "db", "ok")
    ]
    code, out, err = run("status", "--from", str(tmp_path / "empty"))
    assert code == 1 and "no backups in" in err
    code, out, err = run("status", "--from", str(store.root), "--max-age", "soon")
    assert code == 2 and "invalid --max-age" in err


def test_a_scheduled_verify_checks_this_hosts_backups_only(tmp_path):
    from backup.jobs.scheduler import Scheduler

    config = parse_config(
        f'[health]\nstatus_file = "{tmp_path}/status.json"\n[backends.here]\ntype = "local"\npath = "{tmp_path}/store"\n'
        '[jobs.nightly]\nvolumes = ["db"]\nschedule = "@daily"\nverify = "@weekly"\nbackends = ["here"]\n',
        environ={},
    )
    backend = LocalBackend(tmp_path / "store")
    mine = hosted(backend, "db", "a", "0001")
    broken = hosted(backend, "db", "b", "0002")
    (tmp_path / "store" / broken.backup_id.archive_key).write_bytes(b"not an archive")  # b's to find, not a's
    host = DockerHost(client=FakeClient({"Name": "a"}), url="unix:///x")
    outcome = Scheduler(config, docker=lambda: host, helper_image=lambda: "unused").run_once("nightly:verify")
    assert outcome.ok, outcome.errors
    assert outcome.host == "a" and outcome.bytes == mine.stored_size
    host.host_name_override = "b"
    outcome = Scheduler(config, docker=lambda: host, helper_image=lambda: "unused").run_once("nightly:verify")
    assert not outcome.ok and str(broken.backup_id) in outcome.errors[0]


def test_verify_needs_no_docker_to_pick_among_hosts(run, store, monkeypatch):
    monkeypatch.delenv("VOLSAFE_HOST_NAME", raising=False)
    monkeypatch.delenv("VOLSAFE_CONFIG", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/volsafe-test.sock")
    only = hosted(store, "db", "a", "0001")
    code, out, err = run("verify", "db", "--from", str(store.root), "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(only.backup_id)]
    hosted(store, "db", "b", "0002")
    code, out, err = run("verify", "db", "--from", str(store.root))
    assert code == 2 and "this host (its name is unknown)" in err and "hosts a, b" in err
    # prune cannot guess whose backups to remove: it says how to tell it.
    code, out, err = run("prune", "--from", str(store.root), "--keep-last", "1")
    assert code != 0 and "cannot reach the Docker daemon" in err and "set $VOLSAFE_HOST_NAME" in err and err.count("\n") == 1
    assert len(ids(store)) == 2
