"""An interrupted ``restore --force`` into an existing volume leaves its old contents as they were.

The archive holds 24 MB of incompressible data, far more than the one 1 MiB chunk that restore holds
back until the whole archive has checked out, so tar in the helper has extracted most of it into the
staging directory when the cut comes. Three cuts: a corrupt tail (caught only at the end), SIGTERM,
and ``kill -9`` mid-extraction. For the signals the volsafe process's read of the archive stalls
after 16 MB (``tests/support/stalled_reads.py``) until the test has seen 8 MB staged in the volume
and sent the signal, so the cut lands mid-extraction without timing guesses.

Old contents are compared with a snapshot read through Docker's archive endpoint (independent of
volsafe), dotfiles and the root's mtime included. The next restore sweeps every leftover.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from backup.docker.helper import LABEL as HELPER_LABEL
from storage_backends.local import LocalBackend
from tests.support.archive_factory import make_tar, store_backup
from tests.support.volume_tree import run_in_volume, snapshot, staged_bytes

pytestmark = pytest.mark.docker

BIG = 24 << 20
STALL_AT = 16 << 20  # stored bytes served before the stream stalls
EXTRACTED = 8 << 20  # staged bytes to see before cutting: well past the 1 MiB held back

OLD_CONTENTS = r"""
set -eu
cd /v
printf 'secret\n' > .hidden
mkdir -p .config/app dir
printf 'conf\n' > .config/app/settings
printf 'visible\n' > visible
head -c 100000 /dev/urandom > dir/blob
ln -s .hidden .link-to-hidden
chown 1000:1000 .hidden && chmod 0600 .hidden
touch -d '2001-02-03 04:05:06' .hidden .config/app/settings .config/app .config visible dir/blob dir
touch -d '2004-05-06 07:08:09' .
"""
LEFTOVERS = "cd /v && ls -A | grep '^[.]volsafe-' || true"


@pytest.fixture(autouse=True)
def private_state(tmp_path, monkeypatch):
    """This test's crash-recovery records stay its own (other runs share the machine)."""
    state = tmp_path / "state"
    monkeypatch.setenv("VOLSAFE_STATE_DIR", str(state))
    return state


def wait_until(check, timeout: float = 60.0, what: str = "condition", interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def old_volume(host, image, volume) -> tuple[dict, set]:
    host.api.create_volume(volume)
    run_in_volume(host, image, volume, OLD_CONTENTS)
    return snapshot(host, image, volume)


def big_backup(root: Path, token: str):
    noise = random.Random(20).randbytes(BIG)
    entries = [(".", tarfile.DIRTYPE, b""), ("./big.bin", tarfile.REGTYPE, noise), ("./new", tarfile.REGTYPE, b"new\n")]
    manifest = store_backup(LocalBackend(root), "interrupted", make_tar(entries), stamp_token=token)
    assert manifest.stored_size > BIG  # incompressible: zstd stores it raw
    return manifest


def small_backup(root: Path, token: str):
    entries = [(".", tarfile.DIRTYPE, b""), ("./fresh", tarfile.REGTYPE, b"fresh\n")]
    return store_backup(LocalBackend(root), "interrupted", make_tar(entries), stamp_token=token)


def leftovers(host, image, volume) -> list[str]:
    return run_in_volume(host, image, volume, LEFTOVERS).split()


def helpers_of(host, pid: int) -> list[dict]:
    return host.api.containers(all=True, filters={"label": [f"{HELPER_LABEL}=true", f"io.volsafe.pid={pid}"]})


class StallingArchive:
    """Have the volsafe process stall after reading the first ``stall_at`` bytes of the archive at
    ``path`` until ``release()`` (``tests/support/stalled_reads.py``; pass ``env`` to the process).
    A local store refuses a named pipe in place of an archive, so the stall is made inside."""

    def __init__(self, path: Path, stall_at: int):
        store = path.parents[1]
        self.markers = Path(tempfile.mkdtemp(prefix="volsafe-stall-"))
        self.env = {
            "VOLSAFE_TEST_PRELOAD": "tests.support.stalled_reads",
            "VOLSAFE_TEST_STALL": json.dumps(
                {"key": path.relative_to(store).as_posix(), "stall_at": stall_at, "dir": str(self.markers)}
            ),
        }

    class _Marker:
        def __init__(self, path: Path):
            self.path = path

        def is_set(self) -> bool:
            return self.path.exists()

    @property
    def served(self) -> int:
        """The bytes the process's reader handed out before it stalled (-1 before it has)."""
        marker = self.markers / "stalled"
        return int(marker.read_text() or -1) if marker.exists() else -1

    @property
    def stalled(self) -> "StallingArchive._Marker":
        return self._Marker(self.markers / "stalled")

    def start(self) -> None:
        pass  # the process stalls itself

    def release(self) -> None:
        (self.markers / "release").touch()

    def join(self, timeout: float | None = None) -> None:
        shutil.rmtree(self.markers, ignore_errors=True)

    def finish(self) -> None:
        self.release()


@pytest.fixture
def stalling():
    started: list[StallingArchive] = []

    def make(path: Path, stall_at: int = STALL_AT) -> StallingArchive:
        feeder = StallingArchive(path, stall_at)
        feeder.start()
        started.append(feeder)
        return feeder

    yield make
    for feeder in started:
        feeder.release()
        feeder.join(timeout=60)


@contextlib.contextmanager
def _restore_stalled_after_extraction(docker_host, volume, volsafe_process, stalling, root, manifest, private_state, *extra):
    """Start ``restore`` of the stalling archive into ``volume`` (with ``extra`` options); yield the
    process once the read has stalled and tar in the helper has staged EXTRACTED bytes. On the way
    out the process is killed if it still runs, and the stall released."""
    feeder = stalling(root / manifest.backup_id.archive_key)
    proc = volsafe_process(
        "restore", str(manifest.backup_id), "--from", str(root), "--to-volume", volume, *extra,
        env={"VOLSAFE_STATE_DIR": str(private_state), **feeder.env},
    )
    try:
        wait_until(lambda: feeder.stalled.is_set() or proc.poll() is not None, what="the archive to be served")
        assert proc.poll() is None and feeder.served == STALL_AT, "restore ended before the stall"

        def staged() -> bool:
            assert proc.poll() is None, proc.communicate()
            return staged_bytes(docker_host, volume) >= EXTRACTED

        wait_until(staged, what="tar in the helper to extract past the held-back chunk", interval=0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        feeder.finish()


def _cut_mid_extraction(docker_host, helper_image, volume, volsafe_process, stalling, root, manifest, private_state, sig):
    """Start ``restore --force`` of the stalling archive, wait until most of what it got is staged, send ``sig``."""
    with _restore_stalled_after_extraction(docker_host, volume, volsafe_process, stalling, root, manifest, private_state, "--force") as proc:
        proc.send_signal(sig)  # the read stays stalled: the signal must end restore all the same
        _out, err = proc.communicate(timeout=90)
    return proc, err


def test_corrupt_tail_leaves_old_contents_and_root_mtime(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume = volumes("cut-tail")
    before = old_volume(docker_host, helper_image, volume)
    manifest = big_backup(tmp_path, "7a11")
    archive = tmp_path / manifest.backup_id.archive_key
    data = bytearray(archive.read_bytes())
    data[-64] ^= 0xFF  # in the last block: every check up to here passes, the data went to tar
    archive.write_bytes(bytes(data))

    result = volsafe("restore", str(manifest.backup_id), "--from", str(tmp_path), "--to-volume", volume, "--force")
    assert result.code == 1 and ("sha256 mismatch" in result.err or "corrupt" in result.err), result.err
    assert snapshot(docker_host, helper_image, volume) == before  # dotfiles and root mtime included
    assert leftovers(docker_host, helper_image, volume) == []


def test_sigterm_mid_extraction_leaves_old_contents_and_root_mtime(
    docker_host, helper_image, volumes, volsafe_process, stalling, tmp_path, private_state
):
    volume = volumes("cut-term")
    before = old_volume(docker_host, helper_image, volume)
    manifest = big_backup(tmp_path / "store", "7e53")
    proc, err = _cut_mid_extraction(
        docker_host, helper_image, volume, volsafe_process, stalling, tmp_path / "store", manifest, private_state, signal.SIGTERM
    )
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert snapshot(docker_host, helper_image, volume) == before
    assert leftovers(docker_host, helper_image, volume) == []
    assert not helpers_of(docker_host, proc.pid)


def test_kill_9_mid_extraction_keeps_old_contents_and_the_next_restore_sweeps_leftovers(
    docker_host, helper_image, volumes, volsafe_process, volsafe, stalling, tmp_path, private_state
):
    volume = volumes("cut-kill")
    before, links = old_volume(docker_host, helper_image, volume)
    store = tmp_path / "store"
    manifest = big_backup(store, "7c19")
    proc, _err = _cut_mid_extraction(
        docker_host, helper_image, volume, volsafe_process, stalling, store, manifest, private_state, signal.SIGKILL
    )
    assert proc.returncode == -signal.SIGKILL

    # The staging directory is left (nothing could remove it), but nothing of the old contents moved.
    left = leftovers(docker_host, helper_image, volume)
    assert len(left) == 1 and left[0].startswith(".volsafe-restore-"), left
    entries, after_links = snapshot(docker_host, helper_image, volume)
    kept = {name: e for name, e in entries.items() if not name.startswith(".volsafe-") and name != "."}
    assert kept == {name: e for name, e in before.items() if name != "."} and after_links == links
    # A commit killed between its renames would leave the old entries in .volsafe-old-*: add one.
    run_in_volume(docker_host, helper_image, volume, "mkdir /v/.volsafe-old-0123456789ab && echo stale > /v/.volsafe-old-0123456789ab/visible")

    # The leftover does not count as data, and the next restore sweeps both kinds away.
    fresh = small_backup(store, "7c1a")
    result = volsafe("restore", str(fresh.backup_id), "--from", str(store), "--to-volume", volume, "--force")
    assert result.code == 0, result.err
    assert "removed helper container" in result.err  # the next command removed the dead one's helper
    assert not helpers_of(docker_host, proc.pid)
    assert leftovers(docker_host, helper_image, volume) == []
    entries, _ = snapshot(docker_host, helper_image, volume)
    assert sorted(entries) == [".", "fresh"]


def test_kill_9_restore_into_a_new_volume_is_recovered_by_the_next_restore(
    docker_host, helper_image, volumes, volsafe_process, volsafe, stalling, tmp_path, private_state
):
    # kill -9 while restoring into a volume restore created: the volume stays, holding only a
    # staging directory, which does not make it "not empty": the next restore needs no --force.
    volume = volumes("cut-new")
    store = tmp_path / "store"
    manifest = big_backup(store, "7d01")
    feeder = stalling(store / manifest.backup_id.archive_key)
    proc = volsafe_process(
        "restore", str(manifest.backup_id), "--from", str(store), "--to-volume", volume,
        env={"VOLSAFE_STATE_DIR": str(private_state), **feeder.env},
    )
    try:
        wait_until(lambda: feeder.stalled.is_set() or proc.poll() is not None, what="the archive to be served")
        wait_until(
            lambda: docker_host.volume_exists(volume)
            and staged_bytes(docker_host, volume) >= EXTRACTED,
            what="extraction into the new volume",
            interval=0.2,
        )
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        feeder.finish()
    assert helpers_of(docker_host, proc.pid)  # volsafe had no chance to remove its helper

    fresh = small_backup(store, "7d02")
    result = volsafe("restore", str(fresh.backup_id), "--from", str(store), "--to-volume", volume)
    assert result.code == 0, result.err
    assert not helpers_of(docker_host, proc.pid)
    assert leftovers(docker_host, helper_image, volume) == []
    entries, _ = snapshot(docker_host, helper_image, volume)
    assert sorted(entries) == [".", "fresh"]


@pytest.mark.parametrize("existing", [True, False], ids=["force-into-existing", "into-new-volume"])
def test_sigterm_while_the_archive_read_is_blocked_ends_restore_promptly(
    docker_host, helper_image, volumes, volsafe_process, stalling, tmp_path, private_state, existing
):
    # The store stops answering (a stalled NAS or S3 connection): the archive read blocks in the
    # read-ahead thread and is never released. SIGTERM must still end restore at once, exit 130,
    # with the staging directory gone (old contents intact) or the volume restore created removed.
    volume = volumes("cut-stall")
    before = old_volume(docker_host, helper_image, volume) if existing else None
    store = tmp_path / "store"
    manifest = big_backup(store, "7e5a" if existing else "7e5b")
    with _restore_stalled_after_extraction(
        docker_host, volume, volsafe_process, stalling, store, manifest, private_state, *(["--force"] if existing else [])
    ) as proc:
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # the read stays blocked: the stall is not released until the end
        _out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err, err
    assert took < 20, f"SIGTERM took {took:.1f} s to end restore"
    assert not helpers_of(docker_host, proc.pid)
    if existing:
        assert snapshot(docker_host, helper_image, volume) == before
        assert leftovers(docker_host, helper_image, volume) == []
    else:
        assert not docker_host.volume_exists(volume)
