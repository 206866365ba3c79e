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

from tests.support.volume_tree import TRICKY_SCRIPT, fill_tricky, run_in_volume, snapshot

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


COMPOSE = ROOT / "docs" / "compose.yml"


def compose_command() -> list[str]:
    """``docker compose`` (the plugin) if this docker CLI has it, else ``docker-compose`` (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def test_compose_example_backs_up_the_app_volume_and_restores_it_in_place(docker_host, helper_image, volsafe_image, tmp_path):
    """docs/compose.yml as it is, with a test override only for what this machine lacks (the app's
    image: no registry) and the test helper image; its volsafe.toml is the one its comment shows."""
    project = f"vstest-compose-{secrets.token_hex(4)}"
    (tmp_path / "backups").mkdir()
    (tmp_path / "volsafe.toml").write_text(
        '[backends.disk]\ntype = "local"\npath = "/backups"\n'
        '[jobs.nightly]\nschedule = "@every 5s"\nvolume_labels = { "volsafe.backup" = "true" }\nbackends = ["disk"]\n'
        "stop_containers = true\nretention = { keep_daily = 7, keep_weekly = 4 }\n"
    )
    override = tmp_path / "override.yml"
    override.write_text(
        "services:\n"
        f"  app:\n    image: {helper_image}\n"
        "    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1; done\"]\n"
        f"  backup:\n    environment:\n      VOLSAFE_HELPER_IMAGE: {helper_image}\n"
    )
    compose = [*compose_command(), "--project-name", project, "--project-directory", str(tmp_path), "-f", str(COMPOSE), "-f", str(override)]
    env = {**os.environ, "VOLSAFE_IMAGE": volsafe_image}

    def up(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([*compose, *args], capture_output=True, text=True, env=env, timeout=timeout)

    data = f"{project}_db"
    app = f"{project}_app_1"
    try:
        started = up("up", "-d", "app")
        assert started.returncode == 0, started.stderr
        run_in_volume(docker_host, helper_image, data, TRICKY_SCRIPT)
        before = snapshot(docker_host, helper_image, data)
        started = up("up", "-d", "backup")
        assert started.returncode == 0, started.stderr
        store = tmp_path / "backups" / data

        def logs() -> str:
            return up("logs", "--tail", "30", "backup").stdout

        wait_until(lambda: list(store.glob("*.json")), "no backup of the app's volume", 180, logs)
        # The job stopped the app for the backup and started it again.
        wait_until(lambda: docker("inspect", "--format", "{{.State.Running}}", app).stdout.strip() == "true", "app not running", 60, logs)
        assert up("stop", "backup", timeout=120).returncode == 0

        run_in_volume(docker_host, helper_image, data, "echo later > /v/added-after-backup && rm -rf /v/dir")
        assert snapshot(docker_host, helper_image, data) != before
        # The restore the compose file's comment shows.
        assert up("stop", "app").returncode == 0
        restored = up("run", "--rm", "backup", "restore", data, "--from", "/backups", "--force")
        assert restored.returncode == 0, restored.stderr
        assert up("start", "app").returncode == 0
        assert snapshot(docker_host, helper_image, data) == before
    finally:
        up("down", "--volumes", "--remove-orphans", timeout=300)


STACK = ROOT / "docs" / "stack.yml"


@pytest.fixture
def single_node_swarm(docker_host):
    """This daemon as a one-node swarm for the test only (other tests share the daemon): init,
    then leave (forced) and remove the docker_gwbridge network that init made, always."""
    if docker_host.api.info()["Swarm"]["LocalNodeState"] != "inactive":
        pytest.fail("the daemon is already part of a swarm; this test makes and leaves its own")
    had_gwbridge = docker("network", "inspect", "docker_gwbridge").returncode == 0
    made = docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
    try:
        assert made.returncode == 0, made.stderr
        yield
    finally:
        docker("swarm", "leave", "--force", timeout=120)
        if not had_gwbridge:
            docker("network", "rm", "docker_gwbridge")


def test_stack_runs_a_global_service_whose_task_backs_up_to_s3_under_the_node_name(
    docker_host, helper_image, volsafe_image, volumes, bucket, s3_http, single_node_swarm, tmp_path
):
    data = volumes("swarm")
    fill_tricky(docker_host, helper_image, data)
    node_name = docker_host.api.info()["Name"]
    stack_file = tmp_path / "stack.yml"
    stack_file.write_bytes(STACK.read_bytes())  # the very file, beside its volsafe.toml and aws-credentials
    (tmp_path / "volsafe.toml").write_text(
        f'[docker]\nhelper_image = "{helper_image}"\n'
        f'[backends.bucket]\ntype = "s3"\nbucket = "{bucket}"\nprefix = "fleet"\nendpoint_url = "{s3_http}"\nregion = "us-east-1"\n'
        f'[jobs.nightly]\nschedule = "@every 5s"\nvolumes = ["{data}"]\nbackends = ["bucket"]\n'
    )
    (tmp_path / "aws-credentials").write_text(
        f"[default]\naws_access_key_id = {os.environ['AWS_ACCESS_KEY_ID']}\naws_secret_access_key = {os.environ['AWS_SECRET_ACCESS_KEY']}\n"
    )
    stack = f"vstest-stack-{secrets.token_hex(4)}"
    env = {**os.environ, "VOLSAFE_IMAGE": volsafe_image}
    deployed = subprocess.run(
        ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(stack_file), stack],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    try:
        assert deployed.returncode == 0, deployed.stderr

        def tasks() -> str:
            return docker("service", "ps", "--no-trunc", f"{stack}_volsafe").stdout + docker("service", "logs", "--tail", "20", f"{stack}_volsafe").stdout

        prefix = f"fleet/{data}/"
        wait_until(lambda: any(k.endswith(".json") for k in s3_keys(bucket, prefix)), "no backup in the bucket", 240, tasks)
        key = next(k for k in s3_keys(bucket, prefix) if k.endswith(".json"))
        manifest = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        assert manifest["source"]["hostname"] == node_name
        assert manifest["volume"]["name"] == data
        service = docker_host.api.inspect_service(f"{stack}_volsafe")
        assert "Global" in service["Spec"]["Mode"]
    finally:
        docker("stack", "rm", stack, timeout=120)
        # Wait for the task's container to go, so that the swarm's leave and the volume removal find it gone.
        wait_until(
            lambda: not docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}").stdout.strip(), "stack containers left", 120
        )
        docker("volume", "rm", f"{stack}_volsafe-state")


def test_volsafe_in_a_container_leaves_the_helpers_of_a_volsafe_on_the_host_alone(docker_host, helper_image, volsafe_image):
    """Every command's crash recovery removes the helpers of dead volsafe processes, judged by the
    pid in their labels. A pid of the host is not one the container can see: this one is alive (it
    is this test's), so its helper must survive a `docker run … volsafe volumes`."""
    from backup.docker.helper import LABEL
    from backup.quiesce.recovery import pid_namespace

    labels = {
        LABEL: "true", "io.volsafe.role": "probe", "io.volsafe.volume": "none", "io.volsafe.pid": str(os.getpid()),
        "io.volsafe.pidns": pid_namespace() or "", "io.volsafe.created": str(int(time.time())),
    }
    name = f"vstest-hosthelper-{secrets.token_hex(4)}"
    docker_host.api.create_container(helper_image, ["sleep", "120"], name=name, labels=labels,
                                     host_config=docker_host.api.create_host_config(network_mode="none"))
    try:
        docker_host.api.start(name)
        ran = docker("run", "--rm", "--network", "none", "-v", f"{SOCKET}:{SOCKET}", volsafe_image, "--helper-image", helper_image, "volumes")
        assert "removed helper container" not in ran.stderr, ran.stderr
        assert docker_host.api.inspect_container(name)["State"]["Running"]
    finally:
        docker_host.api.remove_container(name, force=True)
