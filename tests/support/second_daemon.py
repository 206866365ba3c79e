"""A second Docker daemon on this machine that stands for "the other host", plus an sshd in front of it.

Registered by ``tests/conftest.py``; a test asks for its fixture. The daemon starts once per session with its
own data root, exec root, pidfile and unix socket, and also listens on ``tcp://127.0.0.1:PORT``
(loopback only, TLS with client certificates from a throwaway CA). The sshd (started on first use) listens on a free
port on 127.0.0.1 with a generated host key and accepts root with a generated client key; its
``authorized_keys`` sets ``DOCKER_HOST`` to the second daemon, so ``docker system dial-stdio`` (what
the SDK's ssh transport runs remotely) reaches it. Everything is torn down at the end of the
session, even when tests fail.

It is a different host as Docker tells hosts apart: the daemon runs in its own mount and UTS
namespaces (``unshare -m -u``), with a fresh directory bind-mounted over /etc/docker there (so it
makes its own key.json, hence its own daemon ID) and its own host name (so ``docker info`` reports
another Name). Its local volumes stay plain directories under its data root, visible from here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
import pytest

from tests.support.volume_tree import unique_volumes

from backup.docker.host import DockerHost, connect
from backup.docker.helper_image import build_helper_image

STARTUP_TIMEOUT = 90


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    """Wait until ``proc`` (an sshd) accepts connections on 127.0.0.1:``port``; fail with the tail
    of its ``log`` if it exits, or after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("sshd did not start listening")
            time.sleep(0.1)


@dataclass
class SecondDaemon:
    """The running second daemon: how to reach it, and a connection for the tests' own checks.

    Its tcp:// listener requires TLS with client certificates (``tls_options``: migrate's flags).
    """

    unix_url: str
    tcp_url: str
    host: DockerHost
    root: Path
    tls_options: list[str]
    name: str  # its host name: what `docker info` reports as Name, unlike the first daemon's


def make_tls_files(directory: Path) -> dict[str, Path]:
    """Write a CA, a server certificate for 127.0.0.1 and a client certificate; return their paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(name: str, key, issuer_name, issuer_key, *, ca: bool = False, usage=None, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "volsafe test CA")])
    ca = certificate("volsafe test CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = certificate("127.0.0.1", server_key, ca_name, ca_key, usage=[ExtendedKeyUsageOID.SERVER_AUTH],
                         san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = certificate("volsafe test client", client_key, ca_name, ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    pem = serialization.Encoding.PEM
    return {
        "ca": write("ca.pem", ca.public_bytes(pem)),
        "server_cert": write("server-cert.pem", server.public_bytes(pem)),
        "server_key": write("server-key.pem", key_pem(server_key)),
        "cert": write("cert.pem", client.public_bytes(pem)),
        "key": write("key.pem", key_pem(client_key)),
    }


def _stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def second_daemon(docker_host, helper_image) -> Iterator[SecondDaemon]:
    """A second dockerd (own data root, exec root, pidfile, unix socket and a loopback tcp port; own
    /etc/docker and host name, so its own daemon ID and Name), with the helper image."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (run ./scripts/test)")
    if shutil.which("unshare") is None:
        pytest.fail("unshare is not installed (util-linux)")
    # Short paths: containerd's sockets live under the exec root, and unix socket paths are limited.
    root = Path(tempfile.mkdtemp(prefix="vs2d-", dir="/tmp"))
    port = free_port()
    unix_url = f"unix://{root}/docker.sock"
    tls = make_tls_files(root / "tls")
    name = f"vs2d-{secrets.token_hex(4)}"  # a valid host name (no '_'), unique per session
    etc = root / "etc-docker"  # what the daemon sees as /etc/docker: it writes a new key.json (its ID) there
    etc.mkdir(mode=0o700)
    Path("/etc/docker").mkdir(exist_ok=True)  # the mount point
    log_file = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [
            # Own mount and UTS namespaces; unshare and sh exec, so proc is dockerd itself (SIGTERM reaches it).
            "unshare", "-m", "-u", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$1" /etc/docker && hostname "$2" && shift 2 && exec "$@"', "sh", str(etc), name,
            "dockerd",
            "--data-root", str(root / "data"),
            "--exec-root", str(root / "x"),
            "--pidfile", str(root / "docker.pid"),
            "-H", unix_url,
            # TCP on loopback only, with TLS and client certificates, as a remote daemon would be.
            "-H", f"tcp://127.0.0.1:{port}",
            "--tlsverify", "--tlscacert", str(tls["ca"]), "--tlscert", str(tls["server_cert"]),
            "--tlskey", str(tls["server_key"]),
            "--iptables=false", "--ip-masq=false", "--bridge=none",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C of pytest reaches us through the fixture, not directly
    )
    host = None
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"second dockerd exited ({proc.returncode}): {(root / 'dockerd.log').read_text()[-2000:]}")
            try:
                host = connect(unix_url)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    pytest.fail(f"second dockerd did not come up: {(root / 'dockerd.log').read_text()[-2000:]}")
                time.sleep(0.3)
        mine, theirs = host.client.info(), docker_host.client.info()
        if (mine["Name"], mine["ID"]) == (name, theirs["ID"]) or mine["Name"] != name:
            pytest.fail(f"the second daemon is not another host: Name {mine['Name']!r}, ID {mine['ID']} (first: {theirs['ID']})")
        build_helper_image(host, tag=helper_image)
        tls_options = ["--to-tlsverify", "--to-tlscacert", str(tls["ca"]), "--to-tlscert", str(tls["cert"]),
                       "--to-tlskey", str(tls["key"])]
        yield SecondDaemon(unix_url=unix_url, tcp_url=f"tcp://127.0.0.1:{port}", host=host, root=root, tls_options=tls_options,
                           name=name)
    finally:
        if host is not None:
            _remove_everything(host)
            host.close()
        _stop_process(proc)
        log_file.close()
        shutil.rmtree(root, ignore_errors=True)


def _remove_everything(host: DockerHost) -> None:
    """Remove every container and volume of the throwaway daemon, so its data root can be deleted."""
    for container in host.api.containers(all=True):
        try:
            host.api.remove_container(container["Id"], force=True)
        except docker.errors.APIError:
            pass
    for volume in host.api.volumes().get("Volumes") or []:
        try:
            host.api.remove_volume(volume["Name"], force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture
def target_volumes(second_daemon: SecondDaemon):
    """Like ``volumes``, on the second daemon: unique names, removed afterwards; no helper may survive."""
    yield from unique_volumes(second_daemon.host, "dst", " on the target")


@dataclass
class SshServer:
    url: str  # ssh://root@127.0.0.1:PORT
    home: Path  # a HOME whose ~/.ssh holds the client key, config and known_hosts


@pytest.fixture(scope="session")
def ssh_server(second_daemon: SecondDaemon) -> Iterator[SshServer]:
    """An sshd on 127.0.0.1 whose root login (by generated key) talks to the second daemon."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or shutil.which("ssh-keygen") is None:
        pytest.fail("sshd is not installed (apt-get install openssh-server; ./scripts/test does it)")
    root = Path(tempfile.mkdtemp(prefix="vs2ssh-", dir="/tmp"))
    home = root / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    port = free_port()
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    subprocess.run([*keygen, "-f", str(root / "host_key")], check=True)
    subprocess.run([*keygen, "-f", str(home / ".ssh" / "id_ed25519")], check=True)
    client_pub = (home / ".ssh" / "id_ed25519.pub").read_text().strip()
    # The login's environment points `docker` (run by the SDK as `docker system dial-stdio`) at the second daemon.
    (root / "authorized_keys").write_text(f'environment="DOCKER_HOST={second_daemon.unix_url}" {client_pub}\n')
    host_pub = (root / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (root / "sshd_config").write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {root / 'host_key'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            f"PidFile {root / 'sshd.pid'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitUserEnvironment DOCKER_HOST",
            "UsePAM no",
            "StrictModes no",
            "",
        ])
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log_file = open(root / "sshd.log", "wb")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(root / "sshd_config")], stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_listening(proc, port, root / "sshd.log")
        yield SshServer(url=f"ssh://root@127.0.0.1:{port}", home=home)
    finally:
        _stop_process(proc, timeout=10)
        log_file.close()
        shutil.rmtree(root, ignore_errors=True)
