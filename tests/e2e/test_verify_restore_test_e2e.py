"""``verify --restore-test`` and a job's ``verify_restore_test``: a restored tree that differs from the
backup fails, and the scratch volume ``volsafe-verify-…`` is removed on every path (success, mismatch,
a failing restore, SIGTERM).

Each test's scratch volumes are found by a label unique to the test: restore creates a volume with
the labels its manifest records, so the test sets one there (the daemon is shared with other runs,
whose scratch volumes are none of this test's business).
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import tarfile
import time

import docker
import pytest

from backup.actions.verify import SCRATCH_PREFIX
from backup.config.schema import parse_config
from backup.jobs.scheduler import Scheduler
from storage_backends.local import LocalBackend
from tests.support.archive_factory import make_tar, store_backup
from tests.support.configs import job_config
from tests.support.volume_tree import run_in_volume

pytestmark = pytest.mark.docker

LABEL = "io.volsafe.test-scratch"


@pytest.fixture
def scratch(docker_host):
    """Return (label value, function listing the scratch volumes made since); removes any at the end.

    A scratch volume is created plain, without the backup's labels (a store must not decide how a
    volume is made), so they are told by their name: those that were not there before the test."""
    token = secrets.token_hex(6)

    def scratch_volumes() -> set[str]:
        found = docker_host.api.volumes().get("Volumes") or []
        return {v["Name"] for v in found if v["Name"].startswith(SCRATCH_PREFIX)}

    before = scratch_volumes()

    def listed() -> list[str]:
        return sorted(scratch_volumes() - before)

    yield token, listed
    for name in listed():
        try:
            docker_host.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass


def label_manifest(root, manifest, token: str) -> None:
    """Record the test's label among the volume labels of a stored manifest (restore applies them)."""
    path = root / manifest.backup_id.manifest_key
    data = json.loads(path.read_text())
    data["volume"]["labels"][LABEL] = token
    path.write_text(json.dumps(data))


# A tar whose entries are not in the order a restored tree is read back in (Docker's archive walk
# and GNU tar --sort=name both go by name): every archive check passes (sha256, size, entries, the
# stream's digest), but the tree a restore produces reads back with another digest.
OUT_OF_ORDER = [(".", tarfile.DIRTYPE, b""), ("./b", tarfile.REGTYPE, b"b\n"), ("./a", tarfile.REGTYPE, b"a\n")]
# A file, then an entry below it: the archive checks pass, tar in the helper fails.
UNRESTORABLE = [(".", tarfile.DIRTYPE, b""), ("./a", tarfile.REGTYPE, b"x"), ("./a/b", tarfile.REGTYPE, b"y")]


def real_backup(docker_host, helper_image, volumes, volsafe, store, token: str) -> str:
    """Back up a small labelled volume with volsafe itself; return its name."""
    volume = volumes("vrt")
    docker_host.api.create_volume(volume, labels={LABEL: token})
    run_in_volume(docker_host, helper_image, volume, "mkdir -p /v/d && echo hi > /v/d/f && ln -s d/f /v/l && ln /v/d/f /v/h")
    result = volsafe("backup", volume, "--to", str(store))
    assert result.code == 0, result.err
    return volume


def test_restore_test_passes_on_a_real_backup_and_removes_the_scratch_volume(
    docker_host, helper_image, volumes, volsafe, tmp_path, scratch
):
    token, listed = scratch
    volume = real_backup(docker_host, helper_image, volumes, volsafe, tmp_path, token)
    result = volsafe("verify", volume, "--from", str(tmp_path), "--restore-test")
    assert result.code == 0 and "restore test" in result.out, result.out + result.err
    assert listed() == []


def test_restore_test_mismatch_fails_and_removes_the_scratch_volume(volsafe, tmp_path, scratch):
    token, listed = scratch
    manifest = store_backup(LocalBackend(tmp_path), "vrt-mismatch", make_tar(OUT_OF_ORDER), stamp_token="0bad")
    label_manifest(tmp_path, manifest, token)
    plain = volsafe("verify", str(manifest.backup_id), "--from", str(tmp_path))
    assert plain.code == 0, plain.out  # every check of the archive itself passes
    result = volsafe("verify", str(manifest.backup_id), "--from", str(tmp_path), "--restore-test")
    assert result.code == 1 and "FAILED" in result.out, result.out
    assert "restored tree's digest differs" in result.out, result.out
    assert listed() == []


def test_restore_test_whose_restore_fails_removes_the_scratch_volume(volsafe, tmp_path, scratch):
    token, listed = scratch
    manifest = store_backup(LocalBackend(tmp_path), "vrt-broken", make_tar(UNRESTORABLE), stamp_token="0bad")
    label_manifest(tmp_path, manifest, token)
    result = volsafe("verify", str(manifest.backup_id), "--from", str(tmp_path), "--restore-test")
    assert result.code == 1 and "FAILED" in result.out and "tar in the helper exited" in result.out, result.out
    assert listed() == []


def test_sigterm_during_the_restore_test_removes_the_scratch_volume(volsafe_process, tmp_path, scratch):
    token, listed = scratch
    noise = random.Random(96).randbytes(96 << 20)
    manifest = store_backup(
        LocalBackend(tmp_path), "vrt-term", make_tar([(".", tarfile.DIRTYPE, b""), ("./big", tarfile.REGTYPE, noise)]), stamp_token="7e57"
    )
    label_manifest(tmp_path, manifest, token)
    proc = volsafe_process("verify", str(manifest.backup_id), "--from", str(tmp_path), "--restore-test")
    try:
        deadline = time.monotonic() + 60
        while not listed():  # the scratch volume exists: the restore test is under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the restore test never created its scratch volume"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert listed() == [], err


def _job_config(tmp_path, volume: str, restore_test: bool):
    restore_test_key = f"verify_restore_test = {'true' if restore_test else 'false'}\n"
    return parse_config(job_config(tmp_path, volumes=(volume,), job_keys='verify = "@weekly"\n' + restore_test_key), environ={})


def test_job_verify_restore_test_setting(docker_host, helper_image, volumes, volsafe, tmp_path, scratch):
    token, listed = scratch
    store = tmp_path / "store"
    volume = real_backup(docker_host, helper_image, volumes, volsafe, store, token)
    config = _job_config(tmp_path, volume, restore_test=True)
    assert config.jobs["nightly"].verify_restore_test
    scheduler = Scheduler(config, docker=lambda: docker_host, helper_image=lambda: helper_image)
    outcome = scheduler.run_once("nightly:verify")
    assert outcome.ok, outcome.errors
    assert listed() == []

    # A newest backup whose restored tree differs: only the restore test can tell. Ids have whole
    # seconds: made in the good backup's second, "0bad" would sort before it and not be the newest
    # (seen in CI once start-up got faster), so it is made a second later.
    time.sleep(1.1)
    bad = store_backup(LocalBackend(store), volume, make_tar(OUT_OF_ORDER), stamp_token="0bad")
    label_manifest(store, bad, token)
    # A scheduled verify checks this host's backups: record the bad one as made here.
    path = store / bad.backup_id.manifest_key
    data = json.loads(path.read_text())
    data["source"]["hostname"] = docker_host.host_name
    path.write_text(json.dumps(data))
    outcome = scheduler.run_once("nightly:verify")
    assert not outcome.ok and len(outcome.errors) == 1, outcome.errors
    assert str(bad.backup_id) in outcome.errors[0] and "restored tree's digest differs" in outcome.errors[0]
    assert listed() == []

    without = Scheduler(_job_config(tmp_path, volume, restore_test=False), docker=lambda: docker_host, helper_image=lambda: helper_image)
    assert without.run_once("nightly:verify").ok
