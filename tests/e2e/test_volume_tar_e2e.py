"""The two ways of reading a volume (backup.docker.volume_tar): a FIFO from GNU tar in the helper, and
Docker's archive endpoint. They must give the same entries, so that digests recorded through one
are checked through the other; and the FIFO path must fall back, or fail cleanly, as documented."""

from __future__ import annotations

import logging
import secrets

import pytest

from backup.docker import fifo as host_fifo
from backup.docker import volume_tar as volume_tar_module
from backup.actions.backup import BackupOptions, backup_volume, run_backup
from backup.docker.helper import archive_stream, created_helper
from backup.docker.helper_image import build_helper_image
from backup.progress import Reporter
from backup.archive.tar.scanner import TarScanner
from backup.errors import VolsafeError
from backup.docker.fifo import DATA_PATH_ENV
from backup.docker.volume_tar import check_tar_exit, fifo_tar, gnu_tar_of
from storage_backends.local import LocalBackend
from tests.support.volume_tree import fill_tricky, run_in_volume

pytestmark = pytest.mark.docker


def _scan(chunks) -> tuple[str, int]:
    scanner = TarScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    scanner.finish()
    return scanner.content_digest, scanner.entries


def _both(docker_host, image, source, mount_type="volume"):
    with fifo_tar(docker_host, image, source, gnu_tar_of(docker_host, image), role="test", mount_type=mount_type) as chunks:
        through_fifo = _scan(chunks)
    with created_helper(docker_host, image, source, role="test", writable=False, mount_type=mount_type) as helper, archive_stream(
        docker_host, helper
    ) as chunks:
        through_api = _scan(chunks)
    return through_fifo, through_api


def test_the_test_image_has_gnu_tar(docker_host, helper_image):
    # Otherwise every other test here, and every backup in the suite, would quietly take the slow path.
    assert gnu_tar_of(docker_host, helper_image)


def test_fifo_and_archive_endpoint_give_the_same_entries(docker_host, helper_image, volumes):
    volume = volumes()
    fill_tricky(docker_host, helper_image, volume)
    # Many names in one directory, in an order that creation order and byte order disagree on.
    run_in_volume(docker_host, helper_image, volume, "mkdir /v/many && cd /v/many && for i in $(seq 300 -1 1); do echo $i > f$i; done && ln f7 g7 && ln f300 a300")
    through_fifo, through_api = _both(docker_host, helper_image, volume)
    assert through_fifo == through_api
    assert through_fifo[1] > 300


def test_bind_directories_read_the_same_both_ways(docker_host, helper_image, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    (tmp_path / "y").write_bytes(b"\0" * 5000)
    (tmp_path / "link").symlink_to("d/x")
    through_fifo, through_api = _both(docker_host, helper_image, str(tmp_path), mount_type="bind")
    assert through_fifo == through_api and through_fifo[1] == 5


def _backup(docker_host, image, volume, store, caplog):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="backup.docker.volume_tar"):
        outcome = backup_volume(docker_host, volume, [LocalBackend(store)], BackupOptions(helper_image=image), Reporter())
    return outcome, caplog.text


def test_local_backups_take_the_fifo_unless_told_not_to(docker_host, helper_image, volumes, tmp_path, caplog, monkeypatch):
    volume = volumes()
    run_in_volume(docker_host, helper_image, volume, "echo data > /v/file")
    fast, log_text = _backup(docker_host, helper_image, volume, tmp_path / "a", caplog)
    assert fast.ok and "through a FIFO" in log_text

    monkeypatch.setenv(DATA_PATH_ENV, "api")
    slow, log_text = _backup(docker_host, helper_image, volume, tmp_path / "b", caplog)
    assert slow.ok and "through a FIFO" not in log_text
    assert slow.manifest.content_digest == fast.manifest.content_digest
    assert slow.manifest.entries == fast.manifest.entries


@pytest.fixture
def odd_image(docker_host):
    """Make helper images under unique tags; they are removed after the test."""
    made = []

    def make(**kwargs) -> str:
        tag = f"volsafe-helper-test-{secrets.token_hex(4)}:x"
        made.append(tag)
        build_helper_image(docker_host, tag=tag, **kwargs)
        return tag

    yield make
    for tag in made:
        docker_host.api.remove_image(tag, force=True)


def test_an_image_without_gnu_tar_uses_the_archive_endpoint(docker_host, helper_image, volumes, tmp_path, caplog, odd_image):
    volume = volumes()
    run_in_volume(docker_host, helper_image, volume, "echo data > /v/file")
    plain = odd_image(gnu_tar=None)
    assert gnu_tar_of(docker_host, plain) == ""
    outcome, log_text = _backup(docker_host, plain, volume, tmp_path, caplog)
    assert outcome.ok and "through a FIFO" not in log_text


def test_a_fifo_helper_that_cannot_run_falls_back_before_reading(docker_host, helper_image, volumes, tmp_path, caplog, odd_image, monkeypatch):
    volume = volumes()
    run_in_volume(docker_host, helper_image, volume, "echo data > /v/file")
    broken = odd_image()
    # The label names a GNU tar that is not there: the helper exits at once without writing.
    monkeypatch.setattr(volume_tar_module, "gnu_tar_of", lambda host, image: "/no/such/tar")
    monkeypatch.setattr(host_fifo, "_unavailable", set())
    outcome, log_text = _backup(docker_host, broken, volume, tmp_path / "a", caplog)
    assert outcome.ok, outcome.failures
    assert "the FIFO helper wrote nothing (exit code 127" in log_text and "archive endpoint" in log_text
    # Once failed, the FIFO path is not tried again for that daemon and image in this process.
    again, log_text = _backup(docker_host, broken, volume, tmp_path / "b", caplog)
    assert again.ok and "FIFO" not in log_text


def test_a_helper_killed_mid_stream_fails_the_backup_and_stores_nothing(docker_host, helper_image, volumes, tmp_path, monkeypatch):
    volume = volumes()
    run_in_volume(docker_host, helper_image, volume, "for i in 1 2 3 4 5 6; do head -c 20000000 /dev/urandom > /v/blob$i; done")
    killed = []
    rest = volume_tar_module._rest

    def killed_after_the_first_piece(host, container_id, *args):
        pieces = rest(host, container_id, *args)
        yield next(pieces)
        host.api.kill(container_id)
        killed.append(container_id)
        yield from pieces

    monkeypatch.setattr(volume_tar_module, "_rest", killed_after_the_first_piece)
    (outcome,) = run_backup(docker_host, [volume], [LocalBackend(tmp_path)], BackupOptions(helper_image=helper_image), Reporter())
    assert killed
    assert not outcome.ok and outcome.manifest is None
    assert "tar in the helper container failed (exit code 137)" in outcome.failures["volume"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "code, messages, verdict",
    [
        (0, "", "ok"),
        (1, "tar: ./log: file changed as we read it\n", "warning"),
        (1, "tar: ./gone: File removed before we read it\n", "warning"),
        (1, "tar: ./a: file changed as we read it\ntar: ./db: File shrank by 4096 bytes; padding with zeros\n", "failure"),
        (2, "tar: ./x: Cannot open: Permission denied\n", "failure"),
        (137, "", "failure"),
    ],
)
def test_what_gnu_tar_exit_codes_mean(tmp_path, caplog, code, messages, verdict):
    errors = tmp_path / "errors"
    errors.write_text(messages)
    if verdict == "failure":
        with pytest.raises(VolsafeError, match=f"exit code {code}") as failed:
            check_tar_exit(code, str(errors))
        if "shrank" in messages:
            assert "File shrank by 4096 bytes" in str(failed.value) and "stop or pause" in str(failed.value)
        return
    with caplog.at_level(logging.WARNING, logger="backup.docker.volume_tar"):
        check_tar_exit(code, str(errors))
    assert ("changed while it was read" in caplog.text) == (verdict == "warning")
