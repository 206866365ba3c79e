"""Pure logic of consistent backups: which containers to quiesce and in what order, hook labels,
per-volume locks, process liveness for crash recovery, and the job config keys. No daemon needed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from backup.config.schema import ConfigError, parse_config
from backup.errors import UsageError, VolsafeError
from backup.quiesce.hooks import HookSpec, hooks_from_labels
from backup.docker.locks import VolumeBusy, volume_lock, volume_locks
from backup.quiesce.plan import AppContainer, from_listing, plan_quiesce, quiesce_order
from backup.quiesce.recovery import process_alive, process_start_time


def app(name, state="running", writable=True, project="shop", service=None, depends_on="", **labels) -> AppContainer:
    all_labels = {"com.docker.compose.project": project, "com.docker.compose.service": service or name, **labels}
    if depends_on:
        all_labels["com.docker.compose.depends_on"] = depends_on
    return AppContainer(id=f"id-{name}", name=name, state=state, writable=writable, labels=all_labels)


def names(containers) -> list[str]:
    return [c.name for c in containers]


def test_dependents_stop_before_their_dependencies_and_start_after():
    db = app("db")
    cache = app("cache")
    api = app("api", depends_on="db:service_healthy:true,cache:service_started:false")
    web = app("web", depends_on="api")
    plan = plan_quiesce([db, web, cache, api], "stop")
    assert names(plan.order) == ["web", "api", "cache", "db"]
    assert names(plan.resume_order) == ["db", "cache", "api", "web"]


def test_depends_on_only_links_services_of_the_same_project():
    # "db" in another project is not the dependency of this "api", so plain name order applies.
    other_db = app("db", project="other")
    api = app("api", depends_on="db")
    assert names(quiesce_order([api, other_db])) == ["api", "db"]
    zdb = AppContainer("id-z", "zzz-db", "running", True, {"com.docker.compose.project": "shop", "com.docker.compose.service": "db"})
    assert names(quiesce_order([zdb, api])) == ["api", "zzz-db"]


def test_a_dependency_cycle_still_yields_every_container_once():
    a = app("a", depends_on="b")
    b = app("b", depends_on="a")
    c = app("c", depends_on="a")
    order = names(quiesce_order([a, b, c]))
    assert sorted(order) == ["a", "b", "c"] and order[0] == "c"


def test_labels_opt_in_and_out_and_only_running_containers_count():
    keep = app("keep", **{"volsafe.stop": "false"})
    stopped = app("old", state="exited")
    paused = app("frozen", state="paused")
    normal = app("normal")
    plan = plan_quiesce([keep, stopped, paused, normal], "pause")
    assert plan.mode == "pause" and names(plan.order) == ["normal"]
    assert names(plan.left_writing) == ["keep"]  # it keeps writing: crash-consistent only


def test_without_a_mode_only_opted_in_containers_are_stopped_and_writers_are_reported():
    opted = app("opted", **{"volsafe.stop": "true"})
    writer = app("writer")
    reader = app("reader", writable=False)
    plan = plan_quiesce([opted, writer, reader], "none")
    assert plan.mode == "stop" and names(plan.order) == ["opted"]
    assert names(plan.left_writing) == ["writer"]
    nothing = plan_quiesce([writer], "none")
    assert nothing.mode == "none" and nothing.order == ()
    with pytest.raises(UsageError):
        plan_quiesce([], "freeze")


def test_from_listing_reads_docker_container_list_entries():
    entry = {
        "Id": "abc123" * 8,
        "Names": ["/shop-db-1"],
        "State": "running",
        "Labels": {"com.docker.compose.depends_on": "cache"},
        "Mounts": [
            {"Type": "bind", "Source": "/etc", "RW": True},
            {"Type": "volume", "Name": "pgdata", "RW": False},
        ],
    }
    container = from_listing(entry, "pgdata")
    assert container.name == "shop-db-1" and container.running and not container.writable
    assert container.depends_on == {"cache"}
    assert from_listing(entry, "other") is None


def test_hook_labels():
    assert hooks_from_labels("db", {"other": "x"}) is None
    spec = hooks_from_labels(
        "db", {"volsafe.hook.pre": "pg_dump", "volsafe.hook.timeout": "2m", "volsafe.hook.on_error": "continue"}
    )
    assert spec == HookSpec("db", "pg_dump", None, 120.0, "continue", source="labels of db")
    with pytest.raises(VolsafeError, match="on_error"):
        hooks_from_labels("db", {"volsafe.hook.post": "x", "volsafe.hook.on_error": "ignore"})
    with pytest.raises(VolsafeError, match="timeout"):
        hooks_from_labels("db", {"volsafe.hook.pre": "x", "volsafe.hook.timeout": "soon"})


def test_a_second_lock_on_a_volume_waits_then_names_the_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("VOLSAFE_LOCK_DIR", str(tmp_path))
    host = SimpleNamespace(identity=("ABCD:EFGH", "host", "/var/lib/docker"))
    with volume_lock(host, "db", action="backup"):
        started = time.monotonic()
        with pytest.raises(VolumeBusy) as caught:
            with volume_lock(host, "db", action="restore", wait=0.3):
                pass
        assert time.monotonic() - started >= 0.3
        assert f"pid {os.getpid()}: backup" in str(caught.value) and "'db'" in str(caught.value)
        with volume_lock(host, "other", action="backup", wait=0):  # another volume: no wait
            pass
        with volume_lock(SimpleNamespace(identity=("OTHER", "host", "/var/lib/docker")), "db", action="backup", wait=0):
            pass  # another daemon
        # Same ID, other data root: a second daemon on the same machine (they share /etc/docker).
        with volume_lock(SimpleNamespace(identity=("ABCD:EFGH", "host", "/srv/docker2")), "db", action="backup", wait=0):
            pass
    # Several at once, as a migration takes them: the same lock named twice is taken once.
    other = SimpleNamespace(identity=("ABCD:EFGH", "host", "/srv/docker2"))
    with volume_locks([(host, "db"), (other, "db"), (host, "db")], action="migration", wait=0):
        with pytest.raises(VolumeBusy):
            with volume_lock(other, "db", action="backup", wait=0):
                pass
    # Released on exit; a waiter gets it as soon as the holder is done.
    holder_done, held = threading.Event(), threading.Event()

    def hold() -> None:
        with volume_lock(host, "db", action="backup"):
            held.set()
            holder_done.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(5)  # the holder has the lock (no sleep: an event says so)
    release = threading.Timer(0.3, holder_done.set)
    release.start()
    try:
        with volume_lock(host, "db", action="backup", wait=5):
            assert holder_done.is_set()
    finally:
        holder_done.set()
        release.cancel()
        release.join()
        thread.join()


def test_process_alive_tells_dead_zombie_and_reused_pids():
    assert process_alive(os.getpid(), process_start_time(os.getpid()))
    assert not process_alive(os.getpid(), "1")  # same pid, another start time: a reused pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while not os.path.exists(f"/proc/{child.pid}/stat") or open(f"/proc/{child.pid}/stat").read().split(")")[-1].split()[0] != "Z":
        time.sleep(0.01)
    assert not process_alive(child.pid)  # a zombie: dead, though not yet reaped
    child.wait()
    assert not process_alive(child.pid)


def test_job_quiesce_and_hook_keys():
    text = """
[jobs.db]
volumes = ["pgdata"]
schedule = "@daily"
pause_containers = true
pre_hook = "pg_dump -f /data/dump.sql"
hook_container = "db"
hook_timeout = "90s"
hook_on_error = "continue"
"""
    job = parse_config(text).jobs["db"]
    assert job.pause_containers and not job.stop_containers
    assert (job.pre_hook, job.post_hook, job.hook_container, job.hook_timeout, job.hook_on_error) == (
        "pg_dump -f /data/dump.sql", None, "db", 90.0, "continue"
    )
    bad = text.replace('hook_container = "db"\n', "stop_containers = true\n").replace('"continue"', '"ignore"')
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, "volsafe.toml")
    message = str(caught.value)
    assert "not both" in message and "need hook_container" in message and "hook_on_error: must be one of abort, continue" in message
