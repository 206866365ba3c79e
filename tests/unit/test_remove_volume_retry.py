"""remove_volume after a SIGTERM: the helper that held the volume may still be being removed, and
no longer listed (seen in CI: a restore test's scratch volume left behind). The removal is tried
again while the daemon says "in use", and gives up (logged) on any other error or after 30 s."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import docker.errors

from backup.docker import staging


class _Api:
    def __init__(self, in_use_times: int, other_error: bool = False):
        self.in_use_times = in_use_times
        self.other_error = other_error
        self.removals = 0
        self.removed_containers: list[str] = []

    def remove_volume(self, name, force=False):
        self.removals += 1
        if self.other_error:
            raise docker.errors.APIError("boom", explanation="driver failed to remove the volume")
        if self.removals <= self.in_use_times:
            raise docker.errors.APIError("conflict", explanation=f"remove {name}: volume is in use - [abc]")

    def containers(self, all=False, filters=None):
        return []  # the helper's removal is under way: no longer listed

    def remove_container(self, cid, force=False):
        self.removed_containers.append(cid)


def _host(api) -> SimpleNamespace:
    return SimpleNamespace(api=api)  # all remove_volume asks of a DockerHost


def test_a_volume_in_use_by_a_helper_being_removed_is_removed_once_it_is_free(monkeypatch, caplog):
    monkeypatch.setattr(staging.time, "sleep", lambda s: None)
    api = _Api(in_use_times=3)
    with caplog.at_level(logging.ERROR):
        staging.remove_volume(_host(api), "volsafe-verify-0123")
    assert api.removals == 4 and not caplog.records


def test_other_errors_are_logged_at_once_and_in_use_only_for_30_seconds(monkeypatch, caplog):
    monkeypatch.setattr(staging.time, "sleep", lambda s: None)
    api = _Api(in_use_times=0, other_error=True)
    with caplog.at_level(logging.ERROR):
        staging.remove_volume(_host(api), "v1")
    assert api.removals == 1 and "could not remove volume v1" in caplog.text and "driver failed" in caplog.text

    clock = iter(range(0, 1000, 10))  # every look at the clock is 10 s later
    monkeypatch.setattr(staging.time, "monotonic", lambda: next(clock))
    api = _Api(in_use_times=10**6)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        staging.remove_volume(_host(api), "v2")
    assert 2 <= api.removals <= 4 and "in use" in caplog.text
