"""Restore (and migrate's target side) write through a FIFO into the helper's tar when the daemon
is local, through Docker's exec stdin otherwise; both must restore the same tree, and a FIFO the
helper cannot use must fall back before a byte is taken."""

from __future__ import annotations

import json

import pytest

from backup.docker import fifo as host_fifo

from backup.docker import staging
from tests.support.volume_tree import fill_tricky, snapshot

pytestmark = pytest.mark.docker


def _backup(docker_host, helper_image, volumes, volsafe, store) -> tuple[str, str]:
    source = volumes()
    fill_tricky(docker_host, helper_image, source)
    result = volsafe("backup", source, "--to", str(store), "--json")
    assert result.code == 0, result.err
    return source, json.loads(result.out)[0]["id"]


def _restore(volsafe, backup_id, store, target) -> str:
    """Restore with --debug; return the log (stderr)."""
    result = volsafe("--debug", "restore", backup_id, "--from", str(store), "--to-volume", target, "--json")
    assert result.code == 0, result.err
    return result.err


def test_fifo_and_exec_stdin_restore_the_same_tree(docker_host, helper_image, volumes, volsafe, tmp_path, monkeypatch):
    source, backup_id = _backup(docker_host, helper_image, volumes, volsafe, tmp_path)
    through_fifo, through_stdin = volumes(), volumes()

    assert "through a FIFO" in _restore(volsafe, backup_id, tmp_path, through_fifo)
    monkeypatch.setenv(host_fifo.DATA_PATH_ENV, "api")
    assert "through a FIFO" not in _restore(volsafe, backup_id, tmp_path, through_stdin)

    original = snapshot(docker_host, helper_image, source)
    assert snapshot(docker_host, helper_image, through_fifo) == original
    assert snapshot(docker_host, helper_image, through_stdin) == original


def test_a_helper_that_does_not_open_the_fifo_falls_back_to_exec_stdin(docker_host, helper_image, volumes, volsafe, tmp_path, monkeypatch):
    source, backup_id = _backup(docker_host, helper_image, volumes, volsafe, tmp_path)
    monkeypatch.setattr(host_fifo, "_unavailable", set())
    monkeypatch.setattr(staging, "FIFO_STDIN", "exit 99")  # as if the FIFO could not be reached
    target = volumes()

    log_text = _restore(volsafe, backup_id, tmp_path, target)
    assert "the helper ended without opening the FIFO; writing into" in log_text
    assert snapshot(docker_host, helper_image, target) == snapshot(docker_host, helper_image, source)
    assert host_fifo._unavailable  # and the next restore does not try again
