"""Test helpers for quiesce and crash-recovery tests on the real daemon: "application" containers
on volumes, a Compose-like project of them, what Docker says they did (events), a private
crash-recovery state directory, the helpers a volsafe process left behind, and polling with a deadline.

The fixtures ``app`` and ``private_state`` are taken into a test module by name:
``app, private_state = apps.app, apps.private_state`` (private_state is autouse there).
"""

from __future__ import annotations

import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import docker
import pytest
from docker.types import Mount

from backup.docker.helper import LABEL as HELPER_LABEL


@contextmanager
def app_containers(host, image: str, default_name: str = "app") -> Iterator[Callable[..., object]]:
    """Yield ``start(volume, name=None, **labels)``, which runs an "application" container (sleep,
    no network) named ``vstest-app-NAME-…`` with ``volume`` at /data, or each volume of a
    ``{volume: path}`` dict at its path; all are removed on the way out, paused or not."""
    made: list[str] = []

    def start(volume: str | dict[str, str], name: str | None = None, **labels: str):
        at = volume if isinstance(volume, dict) else {volume: "/data"}
        container = host.client.containers.run(
            image,
            ["sleep", "3600"],
            name=f"vstest-app-{name or default_name}-{secrets.token_hex(3)}",
            labels=labels,
            mounts=[Mount(path, source, type="volume") for source, path in at.items()],
            network_mode="none",
            stop_signal="SIGKILL",  # sleep as pid 1 ignores SIGTERM; do not wait 10 s for each stop
            detach=True,
        )
        made.append(container.id)
        return container

    try:
        yield start
    finally:
        for cid in made:
            try:
                host.api.remove_container(cid, force=True)  # also takes a paused one
            except docker.errors.NotFound:
                pass


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch) -> Path:
    """Point $VOLSAFE_STATE_DIR at a directory of this test's own (other test runs share the
    machine, and would recover each other's crash records); the fixture's value is that directory."""
    state = tmp_path / "state"
    monkeypatch.setenv("VOLSAFE_STATE_DIR", str(state))
    return state


@pytest.fixture
def app(docker_host, helper_image):
    """``start(volume, name=None, **labels)`` of app_containers: "application" containers, removed afterwards."""
    with app_containers(docker_host, helper_image) as start:
        yield start


@dataclass
class ComposeProject:
    project: str
    db_volume: str
    files_volume: str
    db: object  # the containers, as docker's SDK returns them
    api: object


def compose_project(host, start, project: str, db_volume: str, files_volume: str) -> ComposeProject:
    """Set up a Compose-like project as ``docker compose up`` leaves it, with ``start`` from
    app_containers: volumes db and files (created, with the labels Compose gives them), a "db"
    service using db, and an "api" service (depends on db) using both (db at /data, files at /files)."""
    for volume, short in ((db_volume, "db"), (files_volume, "files")):
        host.api.create_volume(
            volume, labels={"com.docker.compose.project": project, "com.docker.compose.volume": short, "com.docker.compose.version": "2.29.0"}
        )
    compose = {"com.docker.compose.project": project}
    db = start(db_volume, "db", **compose, **{"com.docker.compose.service": "db"})
    api = start(
        {db_volume: "/data", files_volume: "/files"}, "api",
        **compose, **{"com.docker.compose.service": "api", "com.docker.compose.depends_on": "db:service_started:false"},
    )
    return ComposeProject(project, db_volume, files_volume, db, api)


def state_of(host, container) -> str:
    """Return the container's status as Docker says it now: running, paused, exited…"""
    return host.api.inspect_container(container.id)["State"]["Status"]


def events(host, since: float, containers) -> list[tuple[str, str]]:
    """Return (action, container name) of the stop/start/pause/unpause events of ``containers`` since ``since``."""
    names = {c.id: c.name for c in containers}
    # Fractional Unix times: a datetime would be truncated to whole seconds.
    found = host.client.events(
        since=f"{since:.6f}", until=f"{time.time():.6f}", decode=True, filters={"type": "container", "event": ["stop", "start", "pause", "unpause"]}
    )
    return [(e["Action"], names[e["id"]]) for e in found if e.get("id") in names]


def helpers_of(host, pid: int) -> list[dict]:
    """Return the helper containers of the volsafe process ``pid``."""
    return host.api.containers(all=True, filters={"label": [f"{HELPER_LABEL}=true", f"io.volsafe.pid={pid}"]})


def wait_until(check: Callable[[], object], *, timeout: float, what: str = "condition", interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
