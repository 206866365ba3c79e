"""REF resolution among hosts over a real local store: this host's newest backup is found by
reading manifests newest first (usually one), with the same answer as choosing among all of them,
and ``restore --project`` resolves each volume by the same rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import backup.archive.catalog as catalog
from backup.archive.catalog import locate_on_hosts, newest_of_host, resolve_set
from backup.archive.hosts import HostChoice
from backup.archive.manifest import Manifest
from backup.archive.naming import parse_backup_id, parse_ref
from backup.errors import UsageError
from storage_backends.local import LocalBackend

T0 = datetime(2026, 11, 27, 23, 0, 0, tzinfo=timezone.utc)


def _store(backend, volume: str, stamp: str, host: str, created: datetime, project: str | None = None) -> Manifest:
    manifest = Manifest(
        backup_id=parse_backup_id(f"{volume}@{stamp}"), created=created,
        volume_labels={"com.docker.compose.project": project} if project else {}, volume_driver="local",
        volume_driver_opts={}, source_hostname=host, source_docker_id="ID", volsafe_version="test",
        tar_size=10240, stored_size=1, sha256="ab" * 32, entries=1,
    )
    backend.save(manifest.backup_id.manifest_key, [manifest.to_json()])
    return manifest


@pytest.fixture
def reads(monkeypatch):
    """Count manifest reads."""
    count = []
    real = catalog.load_manifest
    monkeypatch.setattr(catalog, "load_manifest", lambda b, i: (count.append(i), real(b, i))[1])
    return count


def test_this_hosts_newest_takes_one_read_and_equals_the_choice_among_all(tmp_path, reads):
    store = LocalBackend(tmp_path / "s")
    for minute in range(5):  # the other host's are older and newer
        _store(store, "db", f"20261127T23{minute:02d}00Z-aaaa", "other", T0 + timedelta(minutes=minute))
        _store(store, "db", f"20261127T23{minute:02d}30Z-bbbb", "me", T0 + timedelta(minutes=minute, seconds=30))
    _store(store, "db", "20261127T230600Z-cccc", "other", T0 + timedelta(minutes=6))
    mine = _store(store, "db", "20261127T230700Z-dddd", "me", T0 + timedelta(minutes=7))
    _, ref, manifest = locate_on_hosts([store], parse_ref("db"), HostChoice(this_host=lambda: "me"))
    assert manifest == mine and ref.backup_id == mine.backup_id and len(reads) == 1
    assert newest_of_host(store, ["db", "gone"], "me") == {"db": mine.backup_id}
    assert newest_of_host(store, ["db"], "third") == {}


def test_backups_of_one_second_are_told_apart_by_created(tmp_path):
    store = LocalBackend(tmp_path / "s")
    _store(store, "db", "20261127T230000Z-ffff", "me", T0 + timedelta(milliseconds=100))
    later = _store(store, "db", "20261127T230000Z-0000", "me", T0 + timedelta(milliseconds=900))
    assert locate_on_hosts([store], parse_ref("db"), HostChoice(this_host=lambda: "me"))[2] == later
    assert newest_of_host(store, ["db"], "me") == {"db": later.backup_id}


def test_without_own_backups_the_only_other_host_else_refused(tmp_path):
    store = LocalBackend(tmp_path / "s")
    a = _store(store, "db", "20261127T230000Z-aaaa", "a", T0)
    assert locate_on_hosts([store], parse_ref("db"), HostChoice(this_host=lambda: "new"))[2] == a
    _store(store, "db", "20261127T230100Z-bbbb", "b", T0 + timedelta(minutes=1))
    with pytest.raises(UsageError, match="hosts a, b have some: choose one with --source-host"):
        locate_on_hosts([store], parse_ref("db"), HostChoice(this_host=lambda: "new"))
    assert locate_on_hosts([store], parse_ref("db"), HostChoice(this_host=lambda: "new", selected=("a",)))[2] == a


def test_project_set_uses_each_volumes_host_rule(tmp_path, reads):
    store = LocalBackend(tmp_path / "s")
    in_project = lambda m: m.volume_labels.get("com.docker.compose.project") == "shop"  # noqa: E731
    db_me = _store(store, "db", "20261127T230000Z-aaaa", "me", T0, "shop")
    _store(store, "db", "20261127T230100Z-bbbb", "other", T0 + timedelta(minutes=1), "shop")  # newer, another host's
    files_other = _store(store, "files", "20261127T230000Z-cccc", "other", T0, "shop")  # only another host has it
    _store(store, "cache", "20261127T230000Z-dddd", "me", T0, "shop")
    _store(store, "cache", "20261127T230100Z-eeee", "me", T0 + timedelta(minutes=1))  # my newest: no longer in it
    _store(store, "blog", "20261127T230000Z-ffff", "me", T0, "blog")
    chosen = resolve_set([store], HostChoice(this_host=lambda: "me"), in_project)
    assert [m for m, _ in chosen] == [db_me, files_other]
    _store(store, "files", "20261127T230100Z-0000", "third", T0 + timedelta(minutes=1), "shop")
    with pytest.raises(UsageError, match="volume 'files'.*hosts other, third"):
        resolve_set([store], HostChoice(this_host=lambda: "me"), in_project)
    assert [m.source_hostname for m, _ in resolve_set([store], HostChoice(this_host=lambda: "me", selected=("other",)), in_project)] == [
        "other", "other"
    ]


def test_project_set_never_takes_an_older_backup_than_the_chosen_hosts_newest(tmp_path):
    """Without a backup of its own, a volume belongs to the set only if the one other host's newest
    backup carries the label: an older backup that does is not the one ``restore VOLUME`` means."""
    store = LocalBackend(tmp_path / "s")
    in_project = lambda m: m.volume_labels.get("com.docker.compose.project") == "shop"  # noqa: E731
    _store(store, "cache", "20261127T230000Z-aaaa", "other", T0, "shop")
    _store(store, "cache", "20261127T230100Z-bbbb", "other", T0 + timedelta(minutes=1))  # newest: left the project
    assert resolve_set([store], HostChoice(this_host=lambda: "me"), in_project) == []
    # Volumes of other projects, backed up by several other hosts, do not stand in the way.
    _store(store, "blog", "20261127T230000Z-cccc", "x", T0, "blog")
    _store(store, "blog", "20261127T230000Z-dddd", "y", T0, "blog")
    db = _store(store, "db", "20261127T230000Z-eeee", "other", T0, "shop")
    assert [m for m, _ in resolve_set([store], HostChoice(this_host=lambda: "me"), in_project)] == [db]
