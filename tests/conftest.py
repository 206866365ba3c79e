"""Shared fixtures: the real Docker daemon, the helper image, uniquely named volumes, and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import docker
import pytest

# Shared fixture modules (the backend conformance suite, the second daemon); their asserts are rewritten.
pytest_plugins = ["tests.support.backend_conformance", "tests.support.second_daemon"]

from backup.cli import main as cli_main
from backup.docker.host import DockerHost, connect
from backup.errors import VolsafeError
from tests.support.volume_tree import unique_volumes

DOCKER_FIXTURES = {"docker_host", "helper_image", "volumes", "volsafe", "volsafe_process", "second_daemon"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reaches the daemon through a fixture ``docker``, so the marker is never forgotten."""
    for item in items:
        if DOCKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)


REQUIRE_DOCKER = os.environ.get("VOLSAFE_REQUIRE_DOCKER") == "1" or os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def docker_host() -> DockerHost:
    """The real daemon. In CI (or via scripts/test) its absence fails the run instead of skipping."""
    try:
        host = connect()
    except VolsafeError as exc:
        if REQUIRE_DOCKER:
            pytest.fail(f"Docker daemon required but not reachable: {exc}")
        pytest.skip(f"no Docker daemon: {exc} (run ./scripts/test)")
    yield host
    host.close()


@pytest.fixture(scope="session")
def helper_image(docker_host: DockerHost) -> str:
    """The helper image built offline by scripts/test (or here, if missing)."""
    from backup.docker.helper_image import build_helper_image

    image = os.environ.get("VOLSAFE_TEST_HELPER_IMAGE", "volsafe-helper:test")
    try:
        docker_host.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        build_helper_image(docker_host, tag=image)
    return image


@pytest.fixture
def volumes(docker_host: DockerHost):
    """Make uniquely named volume names; every volume so named is removed after the test.

    Also checks that no volsafe helper container that mounted one of them survived the test,
    whatever happened in it (other test runs on the same daemon are not this test's business).
    """
    yield from unique_volumes(docker_host, "vol")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys):
    """Run the volsafe CLI in-process without needing Docker; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def volsafe(run, helper_image, monkeypatch):
    """Run the volsafe CLI in-process with the test helper image; return a Result."""
    monkeypatch.setenv("VOLSAFE_HELPER_IMAGE", helper_image)
    return lambda *args: Result(*run(*args))


# A test may have the process import test support modules first (comma-separated in
# VOLSAFE_TEST_PRELOAD), e.g. tests.support.stalled_reads to stall one archive mid-read.
_PRELOAD_THEN_MAIN = (
    "import importlib, os\n"
    "for name in filter(None, os.environ.get('VOLSAFE_TEST_PRELOAD', '').split(',')):\n"
    "    importlib.import_module(name)\n"
    "from backup.cli import main\n"
    "main()\n"
)


@pytest.fixture
def volsafe_process(helper_image):
    """Start the volsafe CLI as a separate process (for signals); return a Popen factory.

    Every process started is ended at teardown, whatever the test did: SIGTERM (volsafe cleans up
    its helpers), then SIGKILL if it has not exited within 30 s; its pipes are closed.
    """
    started: list[subprocess.Popen] = []

    def start(*args: str, **kwargs) -> subprocess.Popen:
        env = {**os.environ, "VOLSAFE_HELPER_IMAGE": helper_image, **kwargs.pop("env", {})}
        proc = subprocess.Popen(
            [sys.executable, "-c", _PRELOAD_THEN_MAIN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            **kwargs,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
