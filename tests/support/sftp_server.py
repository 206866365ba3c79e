"""An SFTP server on 127.0.0.1 for restic's ``sftp:`` repositories: OpenSSH's sshd with its
internal-sftp subsystem, root login by a generated key, on a free port, for one test module.

restic runs ``ssh`` (found on PATH) to reach it. OpenSSH reads the user's configuration from the
passwd entry's home, not $HOME, so the fixture puts a small ``ssh`` wrapper first on PATH that adds
``-F CONFIG`` (host alias, port, key, known host): what a user's ~/.ssh/config does for them.
Nothing outside the fixture's temporary directory is written, except sshd's privilege separation
directory /run/sshd (created if missing, as tests.support.second_daemon does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.second_daemon import free_port, wait_listening


@dataclass
class SftpServer:
    alias: str  # the ssh host name that reaches the server (``sftp:ALIAS:/path``)
    root: Path  # a directory for repositories, readable through the server
    path: str  # PATH with the ssh wrapper first
    process: subprocess.Popen


@pytest.fixture(scope="module")
def sftp_server() -> Iterator[SftpServer]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    ssh = shutil.which("ssh")
    if not os.path.exists(sshd) or ssh is None or shutil.which("ssh-keygen") is None:
        pytest.fail("sshd and ssh are not installed (apt-get install openssh-server openssh-client; ./scripts/test does it)")
    root = Path(tempfile.mkdtemp(prefix="vsftp-", dir="/tmp"))
    port = free_port()
    alias = f"volsafe-sftp-{port}"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    subprocess.run([*keygen, "-f", str(root / "host_key")], check=True)
    subprocess.run([*keygen, "-f", str(root / "client_key")], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    host_pub = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {root / 'host_key'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"PidFile {root / 'sshd.pid'}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        "",
    ]))
    (root / "ssh_config").write_text("\n".join([
        f"Host {alias}",
        "  HostName 127.0.0.1",
        f"  Port {port}",
        "  User root",
        f"  IdentityFile {root / 'client_key'}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {root / 'known_hosts'}",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "",
    ]))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec {ssh} -F {root / "ssh_config"} "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    (root / "repos").mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)
    log = root / "sshd.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(root / "sshd_config")], stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_listening(proc, port, log)
        yield SftpServer(alias=alias, root=root / "repos", path=f"{bin_dir}:{os.environ.get('PATH', '')}", process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
