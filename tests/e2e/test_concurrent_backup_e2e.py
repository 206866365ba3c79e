"""Several volumes backed up at once (issue 8): a job's ``concurrency``, ``backup --concurrency``."""

from __future__ import annotations

import json
import threading

import pytest
import zstandard
from docker.types import Mount

from backup.actions.backup import BackupOptions, run_backup
from backup.actions.job import run_job
from backup.archive import codec
from backup.config.schema import parse_config
from backup.progress import Reporter
from storage_backends.local import LocalBackend
from tests.support.volume_tree import run_in_volume, snapshot


class MeetingBackend(LocalBackend):
    """A local backend whose archive saves wait until ``parties`` of them are in progress at once.

    With backups that really run concurrently the meeting happens; one at a time, it cannot, and
    the save fails after the timeout. Manifests (small, written last) do not wait.
    """

    def __init__(self, root, parties: int):
        super().__init__(root)
        self.meeting = threading.Barrier(parties, timeout=60)
        self.met = 0

    def save(self, key, chunks):
        if key.endswith(".tar.zst"):
            chunks = iter(chunks)
            first = next(chunks, b"")  # the helper is streaming: this backup is under way
            self.meeting.wait()
            self.met += 1
            return super().save(key, _prepend(first, chunks))
        return super().save(key, chunks)


def _prepend(first, rest):
    yield first
    yield from rest


def _fill(docker_host, helper_image, volume, n):
    run_in_volume(docker_host, helper_image, volume, f"mkdir -p d && seq 1 {2000 * n} > d/numbers && echo {volume} > name")


def test_volumes_are_backed_up_at_once_and_restore_intact(docker_host, helper_image, volumes, volsafe, tmp_path):
    names = [volumes() for _ in range(4)]
    for n, name in enumerate(names, start=1):
        _fill(docker_host, helper_image, name, n)
    backend = MeetingBackend(tmp_path / "store", parties=4)
    options = BackupOptions(helper_image=helper_image)
    done = []

    outcomes = run_backup(docker_host, names, [backend], options, Reporter(), concurrency=4, on_done=done.append)

    assert [o.volume for o in outcomes] == names  # in the order asked, whatever order they finished in
    assert all(o.ok for o in outcomes), [o.failures for o in outcomes]
    assert backend.met == 4 and sorted(o.volume for o in done) == sorted(names)
    for outcome in outcomes:
        restored = volumes()
        result = volsafe("restore", str(outcome.manifest.backup_id), "--from", str(tmp_path / "store"), "--to-volume", restored, "--json")
        assert result.code == 0, result.err
        assert snapshot(docker_host, helper_image, restored) == snapshot(docker_host, helper_image, outcome.volume)


def test_one_at_a_time_never_overlaps(docker_host, helper_image, volumes, tmp_path):
    names = [volumes() for _ in range(2)]
    for n, name in enumerate(names, start=1):
        _fill(docker_host, helper_image, name, n)
    backend = MeetingBackend(tmp_path / "store", parties=2)
    backend.meeting = threading.Barrier(2, timeout=2)
    options = BackupOptions(helper_image=helper_image)

    outcomes = run_backup(docker_host, names, [backend], options, Reporter(), concurrency=1)

    # Each backup waited for a partner that never came: proof that they did not overlap.
    assert [o.ok for o in outcomes] == [False, False]
    assert backend.met == 0


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(), 4),
        (dict(stop_containers=True, quiesce_each=True), 1),
        (dict(pause_containers=True, quiesce_each=True), 1),
        # One quiesce for the whole run: the app is down for all volumes, so they may go at once.
        (dict(stop_containers=True), 4),
    ],
)
def test_stopping_or_pausing_containers_forces_one_at_a_time(options, expected):
    assert BackupOptions(helper_image="img", **options).volumes_at_once(4) == expected


def test_job_concurrency_and_compression_come_from_the_config(docker_host, helper_image, volumes, volsafe, tmp_path):
    names = [volumes() for _ in range(3)]
    for n, name in enumerate(names, start=1):
        _fill(docker_host, helper_image, name, n)
    store = tmp_path / "store"
    text = f"""
[backends.here]
type = "local"
path = "{store}"

[jobs.many]
schedule = "@daily"
volumes = {json.dumps(names)}
backends = ["here"]
concurrency = 3
compression_level = 7
compression_threads = 1
"""
    job = parse_config(text, environ={}).jobs["many"]
    assert (job.concurrency, job.compression_level, job.compression_threads) == (3, 7, 1)

    # The job's three volumes meet in the backend: they ran at once, as its concurrency says.
    backend = MeetingBackend(store, parties=3)
    outcome = run_job(docker_host, job, [backend], helper_image, Reporter())
    assert outcome.ok, outcome.errors
    assert backend.met == 3 and sorted(outcome.volumes) == sorted(names)
    assert [b.volume for b in outcome.backups] == outcome.volumes

    # Through the CLI too; each manifest records the job's level.
    config = tmp_path / "volsafe.toml"
    config.write_text(text.replace(str(store), str(tmp_path / "cli")))
    result = volsafe("--config", str(config), "jobs", "run", "many", "--json")
    assert result.code == 0, result.err
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "cli").rglob("*.json")]
    assert [m["archive"]["compression_level"] for m in manifests] == [7, 7, 7]


class OverlapBackend(LocalBackend):
    """A local backend that records the most archive saves in progress at once.

    Each archive save waits until ``parties`` saves are in progress (then all go on at once) or
    ``window`` seconds have passed: concurrent backups meet at once, whatever the machine's speed,
    and serialised ones can only show that within a window, they did not meet.
    """

    def __init__(self, root, parties: int = 2, window: float = 60.0):
        super().__init__(root)
        self.changed = threading.Condition()
        self.now = self.most = 0
        self.parties, self.window = parties, window

    def save(self, key, chunks):
        if not key.endswith(".tar.zst"):
            return super().save(key, chunks)
        with self.changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.most >= self.parties, timeout=self.window)
        try:
            return super().save(key, chunks)
        finally:
            with self.changed:
                self.now -= 1


def test_containers_with_hook_labels_make_their_volumes_go_one_at_a_time_with_quiesce_each(docker_host, helper_image, volumes, tmp_path, monkeypatch):
    jobs = _record_job_sizes(monkeypatch)
    names = [volumes() for _ in range(2)]
    for n, name in enumerate(names, start=1):
        _fill(docker_host, helper_image, name, n)
    container = docker_host.client.containers.run(
        helper_image, ["sleep", "3600"], name=f"vstest-app-hooks-{names[0]}", detach=True, network_mode="none",
        labels={"volsafe.hook.pre": "true"}, stop_signal="SIGKILL",
        mounts=[Mount("/a", names[0], type="volume"), Mount("/b", names[1], type="volume")],
    )
    try:
        # Serialised (--quiesce-each): no second save may start while the first waits (a bounded window:
        # a negative cannot be shown otherwise; the positive case below does not depend on it).
        backend = OverlapBackend(tmp_path, window=1.0)
        each = BackupOptions(helper_image=helper_image, quiesce_each=True)
        outcomes = run_backup(docker_host, names, [backend], each, Reporter(), concurrency=4)
        assert all(o.ok for o in outcomes), [o.failures for o in outcomes]
        assert backend.most == 1
        assert jobs == [codec.JOB_SIZE] * 2  # one at a time after all: the large jobs that use both cores
        jobs.clear()
        # One session for the run (the default): its hooks run once around both volumes, read at once.
        backend = OverlapBackend(tmp_path / "one")
        outcomes = run_backup(docker_host, names, [backend], BackupOptions(helper_image=helper_image), Reporter(), concurrency=4)
        assert all(o.ok for o in outcomes), [o.failures for o in outcomes]
        assert backend.most == 2
        assert jobs == [codec.PARALLEL_JOB_SIZE] * 2
    finally:
        container.remove(force=True)

    backend = OverlapBackend(tmp_path / "free")  # without the hooked container: at once
    outcomes = run_backup(docker_host, names, [backend], BackupOptions(helper_image=helper_image), Reporter(), concurrency=4)
    assert all(o.ok for o in outcomes) and backend.most == 2


def test_volumes_at_once_use_small_zstd_jobs_and_one_at_a_time_large_ones(docker_host, helper_image, volumes, tmp_path, monkeypatch):
    """zstd's 4 MiB jobs keep both cores busy for one volume (10 GB: 1.44x -> 1.17x the host
    pipeline), but with several volumes at once the streams fill the cores already and 4 MiB jobs
    only multiply memory (4 volumes at once: 243 MB peak against 163 MB with 1 MiB jobs)."""
    seen = _record_job_sizes(monkeypatch)
    names = [volumes() for _ in range(2)]
    for n, name in enumerate(names, start=1):
        _fill(docker_host, helper_image, name, n)
    options = BackupOptions(helper_image=helper_image)

    outcomes = run_backup(docker_host, names, [LocalBackend(tmp_path / "a")], options, Reporter(), concurrency=2)
    assert all(o.ok for o in outcomes) and seen == [codec.PARALLEL_JOB_SIZE] * 2
    seen.clear()
    outcomes = run_backup(docker_host, names, [LocalBackend(tmp_path / "b")], options, Reporter(), concurrency=1)
    assert all(o.ok for o in outcomes) and seen == [codec.JOB_SIZE] * 2
    assert codec.PARALLEL_JOB_SIZE < codec.JOB_SIZE


def _record_job_sizes(monkeypatch) -> list[int]:
    """Record the zstd job size of every compression started from now on (the real parameters are used)."""
    seen: list[int] = []
    real = zstandard.ZstdCompressionParameters.from_level

    def recording(level, **kwargs):
        seen.append(kwargs["job_size"])
        return real(level, **kwargs)

    monkeypatch.setattr(codec.zstandard.ZstdCompressionParameters, "from_level", recording)
    return seen
