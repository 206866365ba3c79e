"""Start-up cost: docker-py's SSH transport (paramiko) is loaded only when an ssh:// host needs it."""

import subprocess
import sys

import pytest

pytest.importorskip("paramiko")  # a dependency of docker[ssh]; always installed with volsafe


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cli_import_does_not_load_paramiko():
    assert _run("import sys, backup.cli; print('paramiko' in sys.modules)") == "False"


def test_ssh_adapter_loads_the_real_transport_on_first_use():
    # Port 1 on loopback refuses the connection: what matters is which module answered.
    out = _run(
        "import sys, backup, docker.transport as t\n"
        "try:\n"
        "    t.SSHHTTPAdapter('ssh://nobody@127.0.0.1:1', timeout=5)\n"
        "except Exception:\n"
        "    pass\n"
        "m = sys.modules['docker.transport.sshconn']\n"
        "print(m.__file__ is not None, 'paramiko' in sys.modules)\n"
    )
    assert out == "True True"
