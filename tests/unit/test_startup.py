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
