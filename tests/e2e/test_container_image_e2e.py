"""volsafe as a container: the image scripts/build-image makes, run the way the README says.

A session fixture builds the image once, under a unique tag, and removes it afterwards
(``VOLSAFE_TEST_IMAGE`` names a prebuilt image to use instead, left in place). Every command here
is the ``docker run`` a user types, through the docker CLI.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from tests.support.volume_tree import fill_tricky, snapshot

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]  # a first build (debootstrap) takes minutes

ROOT = Path(__file__).resolve().parents[2]
SOCKET = "/var/run/docker.sock"
IO_DIR = "/run/volsafe"  # the documented mount: FIFOs (the image's TMPDIR) and volume locks


@pytest.fixture(scope="session")
def volsafe_image(docker_host) -> str:
    given = os.environ.get("VOLSAFE_TEST_IMAGE")
    if given:
        yield given
        return
    tag = f"volsafe-test-image:{secrets.token_hex(4)}"
    built = subprocess.run([str(ROOT / "scripts" / "build-image"), tag], capture_output=True, text=True, timeout=1400)
    try:
        assert built.returncode == 0, built.stderr[-4000:]
        yield tag
    finally:
        subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True)


def docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def aws_env_args(endpoint: str) -> list[str]:
    """``-e`` options passing this test's AWS settings (moto's endpoint, its fake keys) to a container."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return [arg for name in names for arg in ("-e", name)] + ["-e", f"AWS_ENDPOINT_URL={endpoint}"]


@pytest.fixture
def containers():
    """Make unique container names; each is removed (forced) after the test."""
    names: list[str] = []

    def make(label: str) -> str:
        names.append(f"vstest-{label}-{secrets.token_hex(4)}")
        return names[-1]

    yield make
    for name in names:
        docker("rm", "--force", "--volumes", name)


def wait_until(check, what: str, timeout: float, on_timeout=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:g}s; {on_timeout()}"
        time.sleep(0.5)


def s3_keys(bucket: str, prefix: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_image_runs_a_scheduled_job_to_a_bind_mounted_store_and_s3_and_restores(
    docker_host, helper_image, volsafe_image, volumes, containers, bucket, s3_http, tmp_path
):
    data, from_disk, from_s3 = volumes("appdata"), volumes("fromdisk"), volumes("froms3")
    fill_tricky(docker_host, helper_image, data)
    before = snapshot(docker_host, helper_image, data)
    app = containers("app")
    started = docker("run", "-d", "--name", app, "--network", "none", "-v", f"{data}:/data", helper_image, "sleep", "3600")
    assert started.returncode == 0, started.stderr

    store = tmp_path / "store"
    store.mkdir()
    config = tmp_path / "volsafe.toml"
    config.write_text(
        '[backends.disk]\ntype = "local"\npath = "/backups"\n'
        f'[backends.bucket]\ntype = "s3"\nbucket = "{bucket}"\nprefix = "fleet"\n'
        f'[jobs.appdata]\nvolumes = ["{data}"]\nschedule = "@every 5s"\nbackends = ["disk", "bucket"]\n'
    )
    daemon = containers("volsafe")
    started = docker(
        "run", "-d", "--name", daemon, "--network", "host",
        "-v", f"{SOCKET}:{SOCKET}", "-v", f"{IO_DIR}:{IO_DIR}",
        "-v", f"{config}:/etc/volsafe/volsafe.toml:ro", "-v", f"{store}:/backups",
        "-e", f"VOLSAFE_HELPER_IMAGE={helper_image}", *aws_env_args(s3_http),
        volsafe_image,
    )  # no command: the image's default is `run`
    assert started.returncode == 0, started.stderr

    def logs() -> str:
        return docker("logs", "--tail", "30", daemon).stderr

    wait_until(lambda: list(store.glob(f"{data}/*.json")), "no backup in the bind-mounted store", 180, logs)
    wait_until(lambda: any(k.endswith(".json") for k in s3_keys(bucket, f"fleet/{data}/")), "no backup in S3", 60, logs)
    assert docker("inspect", "--format", "{{.State.Running}}", daemon).stdout.strip() == "true", logs()
    stopped = docker("stop", "--time", "60", daemon, timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert docker("inspect", "--format", "{{.State.ExitCode}}", daemon).stdout.strip() == "0", logs()
    manifest = json.loads(sorted(store.glob(f"{data}/*.json"))[0].read_text())
    assert manifest["volume"]["name"] == data
    # The daemon's name, as when volsafe runs on the host: not the container's.
    assert manifest["source"]["hostname"] == docker_host.api.info()["Name"]

    restored = docker(
        "run", "--rm", "--network", "none", "-v", f"{SOCKET}:{SOCKET}", "-v", f"{store}:/backups",
        volsafe_image, "--helper-image", helper_image, "restore", data, "--from", "/backups", "--to-volume", from_disk,
    )
    assert restored.returncode == 0, restored.stderr
    assert snapshot(docker_host, helper_image, from_disk) == before

    restored = docker(
        "run", "--rm", "--network", "host", "-v", f"{SOCKET}:{SOCKET}", *aws_env_args(s3_http),
        volsafe_image, "--helper-image", helper_image, "restore", data, "--from", f"s3://{bucket}/fleet", "--to-volume", from_s3,
    )
    assert restored.returncode == 0, restored.stderr
    assert snapshot(docker_host, helper_image, from_s3) == before


def test_fifo_fast_path_works_from_the_container_with_run_volsafe_mounted(docker_host, helper_image, volsafe_image, volumes, tmp_path):
    """With /run/volsafe mounted at the same path (the image's TMPDIR is there), helpers reach
    volsafe's FIFOs, for backup and restore; without it volsafe says so and uses the Docker API."""
    data, copy = volumes("fifo"), volumes("fifocopy")
    fill_tricky(docker_host, helper_image, data)
    before = snapshot(docker_host, helper_image, data)
    store = tmp_path / "store"
    store.mkdir()
    base = ["run", "--rm", "--network", "none", "-v", f"{SOCKET}:{SOCKET}", "-v", f"{store}:/backups"]
    fast = [*base, "-v", f"{IO_DIR}:{IO_DIR}", volsafe_image, "--debug", "--helper-image", helper_image]

    made = docker(*fast, "backup", data, "--to", "/backups")
    assert made.returncode == 0, made.stderr
    assert f"reading {data} through a FIFO" in made.stderr
    assert "archive endpoint" not in made.stderr
    restored = docker(*fast, "restore", data, "--from", "/backups", "--to-volume", copy)
    assert restored.returncode == 0, restored.stderr
    assert f"writing into {copy} through a FIFO" in restored.stderr
    assert snapshot(docker_host, helper_image, copy) == before

    slow = docker(*base, volsafe_image, "--debug", "--helper-image", helper_image, "backup", data, "--to", "/backups")
    assert slow.returncode == 0, slow.stderr
    assert f"reading {data} through Docker's archive endpoint" in slow.stderr
    assert "through a FIFO" not in slow.stderr
    assert len(list(store.glob(f"{data}/*.json"))) == 2
