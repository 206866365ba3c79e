"""Consistent backups with real containers on the real daemon: --stop/--pause bring the application
back on every path (success, failing backend, SIGTERM, kill -9 + the next command), Compose order,
exec hooks, and per-volume locking."""

from __future__ import annotations

import io
import json
import secrets
import signal
import tarfile
import time

import pytest
import zstandard

from backup.actions.backup import BackupOptions, backup_volume
from backup.progress import Reporter
from storage_backends import BackendError
from storage_backends.local import LocalBackend
from tests.support import apps
from tests.support.apps import events, helpers_of, state_of, wait_until
from tests.support.configs import job_config
from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker


app, private_state = apps.app, apps.private_state  # the shared fixtures; private_state is autouse


def writing(directory) -> bool:
    """Return whether a backup has started writing below ``directory``."""
    return any(p.is_file() and p.stat().st_size > 0 for p in directory.rglob("*"))


def small_volume(host, image, volume) -> None:
    host.api.create_volume(volume)
    run_in_volume(host, image, volume, "echo hello > /v/file && head -c 200000 /dev/urandom > /v/blob")


def big_volume(host, image, volume, mb: int = 150) -> None:
    host.api.create_volume(volume)
    # Incompressible data at a high level on one thread keeps the stream busy for a few seconds.
    run_in_volume(host, image, volume, f"head -c {mb}m /dev/urandom > /v/big")


def archive_names(backup_dir, volume) -> set[str]:
    (archive,) = (backup_dir / volume).glob("*.tar.zst")
    data = zstandard.ZstdDecompressor().stream_reader(archive.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name for m in tar.getmembers()}


def test_stop_respects_compose_order_and_restarts_after_success(docker_host, helper_image, volumes, app, volsafe, tmp_path):
    volume = volumes("stop")
    small_volume(docker_host, helper_image, volume)
    compose = {"com.docker.compose.project": f"p{secrets.token_hex(3)}"}
    db = app(volume, "db", **compose, **{"com.docker.compose.service": "db"})
    api = app(volume, "api", **compose, **{"com.docker.compose.service": "api", "com.docker.compose.depends_on": "db:service_started:false"})
    reader = app(volume, "reader", **{"volsafe.stop": "false"})

    # Without --stop: backed up with everything running, and a warning says what that means.
    plain = volsafe("backup", volume, "--to", str(tmp_path / "plain"))
    assert plain.code == 0, plain.err
    assert "only crash-consistent" in plain.err and api.name in plain.err

    since = time.time()
    result = volsafe("backup", volume, "--stop", "--to", str(tmp_path / "b"), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)[0]["volume"] == volume
    assert "only crash-consistent" in result.err and reader.name in result.err  # it opted out
    assert events(docker_host, since, [db, api, reader]) == [
        ("stop", api.name), ("stop", db.name), ("start", db.name), ("start", api.name)
    ]
    assert [state_of(docker_host, c) for c in (db, api, reader)] == ["running"] * 3
    assert "./file" in archive_names(tmp_path / "b", volume)


class BrokenBackend(LocalBackend):
    """A backend whose disk "fills up" after the first chunk."""

    def save(self, key, chunks):
        def failing():
            yield next(iter(chunks))
            raise BackendError(f"{self.url}: no space left on device")

        return super().save(key, failing())


@pytest.mark.parametrize("mode", ["stop", "pause"])
def test_containers_come_back_when_the_backend_fails(docker_host, helper_image, volumes, app, tmp_path, mode):
    volume = volumes(mode)
    small_volume(docker_host, helper_image, volume)
    container = app(volume)
    since = time.time()
    options = BackupOptions(helper_image=helper_image, stop_containers=mode == "stop", pause_containers=mode == "pause")
    outcome = backup_volume(docker_host, volume, [BrokenBackend(tmp_path)], options, Reporter())
    assert outcome.manifest is None and "no space left" in "".join(outcome.failures.values())
    actions = [a for a, _ in events(docker_host, since, [container])]
    assert actions == (["stop", "start"] if mode == "stop" else ["pause", "unpause"])
    info = docker_host.api.inspect_container(container.id)["State"]
    assert info["Running"] and not info["Paused"]


@pytest.mark.parametrize("mode", ["--stop", "--pause"])
def test_sigterm_mid_backup_brings_the_app_back(docker_host, helper_image, volumes, app, volsafe_process, tmp_path, private_state, mode):
    volume = volumes("term")
    big_volume(docker_host, helper_image, volume)
    container = app(volume)
    proc = volsafe_process(
        "backup", volume, mode, "--to", str(tmp_path / "b"), "--threads", "1", "--level", "9", env={"VOLSAFE_STATE_DIR": str(private_state)}
    )
    down = "exited" if mode == "--stop" else "paused"
    # Once archive bytes reach the backend, the helper exists and volsafe knows it.
    wait_until(lambda: state_of(docker_host, container) == down and writing(tmp_path / "b"), timeout=30, what="the backup to be under way")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert state_of(docker_host, container) == "running"
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]  # nothing half-stored


def test_after_kill_9_the_next_command_restarts_the_app_and_removes_the_helper(
    docker_host, helper_image, volumes, app, volsafe_process, volsafe, tmp_path, private_state
):
    volume, other = volumes("kill"), volumes("kill-next")
    big_volume(docker_host, helper_image, volume)
    small_volume(docker_host, helper_image, other)
    container = app(volume)
    proc = volsafe_process(
        "backup", volume, "--stop", "--to", str(tmp_path / "b"), "--threads", "1", "--level", "9", env={"VOLSAFE_STATE_DIR": str(private_state)}
    )

    def helpers():
        return helpers_of(docker_host, proc.pid)

    wait_until(lambda: state_of(docker_host, container) == "exited" and writing(tmp_path / "b"), timeout=30, what="the backup to be under way")
    proc.kill()
    proc.communicate(timeout=30)  # dead and reaped: nothing of it can act any more
    assert state_of(docker_host, container) == "exited"  # volsafe had no chance to restart it
    assert helpers()  # nor to remove its helper

    result = volsafe("backup", other, "--to", str(tmp_path / "next"))  # any command that talks to Docker
    assert result.code == 0, result.err
    assert f"restarted container {container.name}" in result.err and volume in result.err
    assert state_of(docker_host, container) == "running"
    assert not helpers()
    assert not list(private_state.rglob("*.json"))  # the record is gone: a later command does nothing
    again = volsafe("backup", other, "--to", str(tmp_path / "next"))
    assert again.code == 0 and "restarted" not in again.err


def test_pre_hook_output_lands_in_the_archive_and_post_hook_runs(docker_host, helper_image, volumes, app, volsafe, tmp_path):
    volume = volumes("hook")
    small_volume(docker_host, helper_image, volume)
    db = app(
        volume,
        "db",
        **{
            "volsafe.hook.pre": "echo dumping; echo 'CREATE TABLE t;' > /data/dump.sql",
            "volsafe.hook.post": "rm /data/dump.sql && touch /data/post-ran",
        },
    )
    result = volsafe("backup", volume, "--stop", "--to", str(tmp_path))
    assert result.code == 0, result.err
    assert "dumping" in result.err  # hook output goes to the log
    assert "./dump.sql" in archive_names(tmp_path, volume)
    assert state_of(docker_host, db) == "running"
    assert run_in_volume(docker_host, helper_image, volume, "ls /v").split() == ["blob", "file", "post-ran"]


def test_failing_pre_hook_aborts_but_post_hook_still_runs(docker_host, helper_image, volumes, app, volsafe, tmp_path):
    volume = volumes("hookfail")
    small_volume(docker_host, helper_image, volume)
    db = app(volume, "db", **{"volsafe.hook.pre": "echo cannot dump >&2; exit 3", "volsafe.hook.post": "touch /data/post-ran"})
    result = volsafe("backup", volume, "--stop", "--to", str(tmp_path))
    assert result.code == 1
    assert "failed with exit code 3: cannot dump" in result.err
    assert json.loads(volsafe("list", volume, "--from", str(tmp_path), "--json").out) == []
    assert "post-ran" in run_in_volume(docker_host, helper_image, volume, "ls /v")
    assert state_of(docker_host, db) == "running"  # the hook failed before anything was stopped


def test_hanging_hook_hits_its_timeout_and_is_killed(docker_host, helper_image, volumes, app, volsafe, tmp_path):
    volume = volumes("hookhang")
    small_volume(docker_host, helper_image, volume)
    db = app(volume, "db", **{"volsafe.hook.pre": "sleep 300", "volsafe.hook.timeout": "1s"})
    started = time.monotonic()
    result = volsafe("backup", volume, "--to", str(tmp_path))
    assert result.code == 1 and "timed out after 1s" in result.err
    assert time.monotonic() - started < 20
    processes = docker_host.api.top(db.id)["Processes"]
    assert not [p for p in processes if "sleep 300" in " ".join(p)]


def test_job_config_hooks_and_pause(docker_host, helper_image, volumes, app, volsafe, tmp_path):
    volume = volumes("job")
    small_volume(docker_host, helper_image, volume)
    db = app(volume, "db")
    config = tmp_path / "volsafe.toml"
    config.write_text(job_config(
        tmp_path, job="db", volumes=(volume,), store=tmp_path / "b", status=False,
        job_keys=f'pause_containers = true\nhook_container = "{db.name}"\npre_hook = "echo flushed > /data/flushed"\n',
    ))
    since = time.time()
    result = volsafe("jobs", "run", "db", "--config", str(config))
    assert result.code == 0, result.err
    assert "./flushed" in archive_names(tmp_path / "b", volume)
    assert [a for a, _ in events(docker_host, since, [db])] == ["pause", "unpause"]
    assert state_of(docker_host, db) == "running"


def test_two_backups_of_one_volume_are_serialised(docker_host, helper_image, volumes, volsafe_process, volsafe, tmp_path):
    volume = volumes("lock")
    big_volume(docker_host, helper_image, volume, mb=100)
    first = volsafe_process("backup", volume, "--to", str(tmp_path / "a"), "--threads", "1", "--level", "9")
    wait_until(lambda: writing(tmp_path / "a"), timeout=30, what="the first backup to start")
    busy = volsafe("backup", volume, "--to", str(tmp_path / "b"), "--lock-wait", "0")
    assert busy.code == 1 and f"is busy: pid {first.pid}: backup" in busy.err
    waited = volsafe("backup", volume, "--to", str(tmp_path / "b"))
    assert first.poll() is not None  # it only got the volume once the first was done
    assert waited.code == 0 and "waiting" in waited.err, waited.err
    assert first.communicate(timeout=30) and first.returncode == 0
