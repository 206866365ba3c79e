"""Who a container is, read from its own /proc (what crash recovery records): the real files of a
busybox container on this daemon, with Docker's defaults and the cases that could mislead."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from backup.quiesce.recovery import container_identity

pytestmark = pytest.mark.docker


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def started(helper_image):
    """Start a named ``sleep`` container from the helper image with extra ``docker run`` options;
    return (name, id). All are removed after the test."""
    names: list[str] = []

    def start(*options: str) -> tuple[str, str]:
        names.append(f"vstest-ident-{secrets.token_hex(4)}")
        return names[-1], docker("run", "-d", "--name", names[-1], *options, helper_image, "sleep", "300")

    yield start
    for name in reversed(names):
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


def identity(name: str) -> str | None:
    return container_identity(docker("exec", name, "cat", "/proc/self/cgroup"), docker("exec", name, "cat", "/proc/self/mountinfo"))


def upper_layer(name: str) -> str:
    return docker("inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", name).split("/")[-2]


def test_a_containers_identity_is_its_id_and_survives_a_restart(started):
    name, cid = started()
    assert identity(name) == f"docker/{cid}"
    docker("restart", "--time", "0", name)
    assert identity(name) == f"docker/{cid}"


def test_without_the_cgroup_path_the_hostname_file_and_its_own_layer_identify_it(started):
    """``--cgroupns private`` (Docker's default on cgroup v2) hides the id from /proc/self/cgroup."""
    name, cid = started("--cgroupns", "private")
    assert identity(name) == f"docker/{cid}/{upper_layer(name)}"
    docker("restart", "--time", "0", name)
    assert identity(name) == f"docker/{cid}/{upper_layer(name)}"


def test_a_container_in_anothers_network_is_not_taken_for_it(started):
    """With ``--network container:X`` Docker bind-mounts X's hostname file: never X's identity."""
    other, _ = started("--cgroupns", "private")
    name, cid = started("--cgroupns", "private", "--network", f"container:{other}")
    assert identity(name) not in (None, identity(other))
    assert identity(name) == f"{identity(other).rsplit('/', 1)[0]}/{upper_layer(name)}"
    assert cid not in (identity(name) or "")
