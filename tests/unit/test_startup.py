"""Start-up cost: docker-py's SSH transport (paramiko) is loaded only when an ssh:// host needs it."""

import os
import subprocess
import sys

import paramiko  # noqa: F401 - a dependency of volsafe (ssh:// hosts): these tests need it


def _run(code: str, home=None) -> str:
    env = {**os.environ, "HOME": str(home)} if home else None
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cli_import_does_not_load_paramiko():
    assert _run("import sys, backup.cli; print('paramiko' in sys.modules)") == "False"


def test_ssh_client_goes_through_the_real_transport(tmp_path):
    # Port 1 on loopback refuses the connection; paramiko's own error shows that the real SSH
    # transport, not the stand-in, made the attempt. HOME is empty so no ~/.ssh/config applies.
    out = _run(
        "import sys, backup, docker, paramiko\n"
        "try:\n"
        "    docker.APIClient(base_url='ssh://nobody@127.0.0.1:1', timeout=5)\n"
        "except paramiko.ssh_exception.NoValidConnectionsError:\n"
        "    print('refused by paramiko')\n"
        "print(sys.modules['docker.transport.sshconn'].__file__.endswith('sshconn.py'))\n",
        home=tmp_path,
    )
    assert out.splitlines() == ["refused by paramiko", "True"]


# The import budget: what a command that needs no daemon, no S3, no keys and no schedule must not
# load (each of these cost start-up time that every `list`, hook and scheduled job paid).
# fmt: off
NOT_FOR_VERSION = (
    "typer", "click", "rich", "pydantic", "backup.config.schema", "backup.actions",
    "backup.cli.state", "backup.errors", "storage_backends",  # what main() needs only after --version
)
NOT_FOR_LIST = (
    "docker", "requests", "urllib3", "paramiko",  # the Docker SDK: only with a connection to a daemon
    "boto3", "botocore", "s3transfer",  # S3: only when an s3:// backend is opened
    "cryptography", "pyrage",  # encryption: only with keys or a passphrase
    "apscheduler",  # schedules: only when one is read
    "apprise",  # notifications: only when one is sent
    "backup.actions.backup", "backup.actions.restore", "backup.quiesce.session",  # other commands' modules
    "pydantic",  # typer 0.29 converts every option through it: +0.25 s per command (pyproject pins typer < 0.29)
    "backup.config.schema", "backup.config.converters",  # no config file to read: no schema to check it against
)
# fmt: on


def _loaded_after(args: list[str], cwd, watched) -> tuple[str, list[str]]:
    """Run ``volsafe ARGS`` in a fresh interpreter, with no config file to find; return what it
    printed on stdout and which of ``watched`` (packages or modules) it had imported by the end."""
    code = (
        "import io, sys, contextlib\n"
        "from backup.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    code = main({args!r})\n"
        # modules imported from a file: not backup/__init__'s stand-in for docker-py's SSH transport
        "real = [m for m, mod in list(sys.modules.items()) if getattr(mod, '__spec__', None) is not None]\n"
        f"loaded = sorted({{w for w in {tuple(watched)!r} for m in real if m == w or m.startswith(w + '.')}})\n"
        "print(code, out.getvalue().strip(), ','.join(loaded), sep='|')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VOLSAFE_CONFIG", "XDG_CONFIG_HOME")}
    env["HOME"] = str(cwd)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    exit_code, printed, loaded = done.stdout.strip().split("|")
    assert exit_code == "0", done.stderr
    return printed, [m for m in loaded.split(",") if m]


def test_version_loads_neither_click_nor_any_command(tmp_path):
    printed, loaded = _loaded_after(["--version"], tmp_path, NOT_FOR_VERSION + NOT_FOR_LIST)
    assert printed.startswith("volsafe ")
    assert loaded == []


def test_list_of_an_empty_store_loads_no_docker_s3_crypto_or_scheduler(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    printed, loaded = _loaded_after(["list", "--from", str(store), "--json"], tmp_path, NOT_FOR_LIST)
    assert printed == "[]"
    assert loaded == []


def test_a_backup_without_keys_does_not_load_cryptography(tmp_path):
    # The backup command resolves its key (options, $VOLSAFE_PASSPHRASE, the config) on every run;
    # with none of them, nothing is encrypted and cryptography's ciphers need not load.
    code = (
        "import sys\n"
        "import backup.cli.backup_cmd\n"
        "from backup.cli.keys import recipients_for\n"
        "from backup.cli.state import State\n"
        "print(recipients_for(State(), None, None), 'cryptography' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VOLSAFE_CONFIG", "VOLSAFE_PASSPHRASE")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**env, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "False"]


def test_a_connection_to_a_unix_socket_daemon_loads_no_ssh_transport(tmp_path):
    # docker-py imports its SSH transport (paramiko, and invoke under it: about 0.25 s) whatever the
    # daemon; backup/__init__.py defers it to ssh:// hosts. (Importing backup.cli alone no longer
    # imports the SDK, so only a connection shows whether the deferral works.)
    out = _run(
        "import sys\n"
        "from backup.docker.host import connect\n"
        "from backup.errors import DockerUnavailable\n"
        "try:\n"
        f"    connect('unix://{tmp_path}/no-daemon.sock')\n"
        "except DockerUnavailable:\n"
        "    print('no daemon', 'docker' in sys.modules, *(m in sys.modules for m in ('paramiko', 'invoke')))\n",
        home=tmp_path,
    )
    assert out.splitlines() == ["no daemon True False False"]
