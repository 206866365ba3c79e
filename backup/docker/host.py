"""Connecting to a Docker daemon, and turning Docker SDK errors into one-line volsafe errors.

A daemon is named the ways the Docker CLI names one: ``unix://``, ``tcp://`` (with TLS options like
``--tlsverify``/``--tlscacert``/``--tlscert``/``--tlskey``, or ``DOCKER_TLS_VERIFY`` and
``DOCKER_CERT_PATH``), ``ssh://user@host[:port]`` (the SDK's paramiko transport, which runs
``docker system dial-stdio`` on the remote host), or the name of a Docker context.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping

from backup.errors import DockerUnavailable, NotFoundError, UsageError, VolsafeError

if TYPE_CHECKING:
    import docker
    import docker.tls

# The Docker SDK (and requests under it) is imported when a daemon is connected to, not when this
# module is: commands that never talk to a daemon (--version, list, config) do not pay for it.

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# Streams of large volumes can stall for a while (a slow backend, a busy disk); requests' timeout is
# per socket operation, not for the whole transfer.
API_TIMEOUT = 300


def _reason(exc: BaseException) -> str:
    """Return the innermost readable cause of a connection error, e.g. 'No such file or directory'."""
    text = str(exc)
    for marker in ("FileNotFoundError(2, '", "ConnectionRefusedError(111, '", "PermissionError(13, '"):
        if marker in text:
            return text.split(marker, 1)[1].split("'", 1)[0]
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class DockerHost:
    """A connected daemon: the SDK client plus what volsafe records about it."""

    client: docker.DockerClient
    url: str
    remote: bool = False  # reached over the network (tcp://, ssh://), not a local socket
    # The host name backups are recorded under when it is not the daemon's Name ($VOLSAFE_HOST_NAME,
    # [docker] host_name): set by whoever connects (backup.cli.state).
    host_name_override: str | None = None

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    @functools.cached_property
    def info(self) -> dict:
        """Return the daemon's ``docker info`` answer (cached)."""
        with docker_errors(self):
            return self.client.info()

    @property
    def name(self) -> str:
        """Return the daemon host's name as Docker reports it."""
        return str(self.info.get("Name", ""))

    @property
    def host_name(self) -> str:
        """Return the name this host's backups are recorded under: the override, else the daemon's
        Name (the host's name, also when volsafe itself runs in a container)."""
        return self.host_name_override or self.name

    @property
    def daemon_id(self) -> str:
        """Return the daemon's ID as Docker reports it."""
        return str(self.info.get("ID", ""))

    @property
    def identity(self) -> tuple[str, str, str]:
        """Return what tells daemons apart: the ID alone does not, since daemons that share
        /etc/docker (several on one machine) share it; their data roots differ."""
        return self.daemon_id, self.name, str(self.info.get("DockerRootDir", ""))

    def volume(self, name: str) -> dict:
        """Return the volume's inspect data. Raises NotFoundError if there is no such volume."""
        try:
            with docker_errors(self):
                return self.api.inspect_volume(name)
        except NotFoundError:
            raise NotFoundError(f"no volume named {name!r} on {self.url}") from None

    def volume_exists(self, name: str) -> bool:
        """Return whether a volume of that name exists."""
        try:
            self.volume(name)
        except NotFoundError:
            return False
        return True

    def close(self) -> None:
        self.client.close()


class docker_errors:
    """Context manager that re-raises Docker SDK and connection errors as VolsafeError subclasses."""

    def __init__(self, host: DockerHost | str | None = None):
        self.where = host.url if isinstance(host, DockerHost) else (host or DEFAULT_SOCKET)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc is None or isinstance(exc, VolsafeError):
            return False
        import docker.errors  # loaded already whenever an SDK call raised
        import requests.exceptions

        if isinstance(exc, docker.errors.NotFound):
            raise NotFoundError(_api_message(exc)) from exc
        if isinstance(exc, docker.errors.APIError):
            raise VolsafeError(f"Docker daemon at {self.where}: {_api_message(exc)}") from exc
        if isinstance(exc, (requests.exceptions.ConnectionError, docker.errors.DockerException)):
            raise DockerUnavailable(
                f"cannot reach the Docker daemon at {self.where}: {_reason(exc)} "
                "(is dockerd running? set DOCKER_HOST or --host)"
            ) from exc
        if isinstance(exc, requests.exceptions.RequestException):  # e.g. a read timeout
            raise VolsafeError(f"Docker daemon at {self.where} did not answer: {_reason(exc)}") from exc
        return False


def _api_message(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc).strip()


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings for a tcp:// daemon, as Docker's --tlsverify, --tlscacert, --tlscert, --tlskey."""

    verify: bool = False
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def given(self) -> bool:
        """Return whether any TLS setting was given at all."""
        return self.verify or any((self.ca_cert, self.cert, self.key))


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon is and how to talk to it, resolved from a URL or a context name."""

    url: str
    tls: TlsOptions | None = None  # only for tcp://
    context: str | None = None  # the context it came from, for messages

    @property
    def remote(self) -> bool:
        """Return whether the daemon is reached over the network rather than a local socket."""
        return self.url.split("://", 1)[0] in ("tcp", "ssh", "http", "https")


def docker_config_dir(env: Mapping[str, str]) -> Path:
    """Return the Docker CLI's config directory: $DOCKER_CONFIG, else ~/.docker."""
    return Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME") or Path.home()) / ".docker")


def _env_tls(env: Mapping[str, str]) -> TlsOptions | None:
    """Return the TLS options DOCKER_TLS_VERIFY and DOCKER_CERT_PATH ask for, or None."""
    cert_path = env.get("DOCKER_CERT_PATH")
    verify = env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
    if not verify and not cert_path:
        return None
    base = Path(cert_path) if cert_path else None
    return TlsOptions(
        verify=verify,
        ca_cert=str(base / "ca.pem") if base else None,
        cert=str(base / "cert.pem") if base else None,
        key=str(base / "key.pem") if base else None,
    )


def _context_endpoint(name: str, config_dir: Path) -> Endpoint:
    """Return the endpoint of Docker context ``name`` as the Docker CLI stores it.

    Raises NotFoundError if there is no such context, UsageError if its files are unreadable.
    """
    if name == "default":
        return Endpoint(DEFAULT_SOCKET, context=name)
    digest = hashlib.sha256(name.encode()).hexdigest()  # the CLI names context directories so
    meta_file = config_dir / "contexts" / "meta" / digest / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
        docker_endpoint = meta["Endpoints"]["docker"]
        url = docker_endpoint.get("Host") or DEFAULT_SOCKET
    except FileNotFoundError:
        raise NotFoundError(f"no Docker host URL or context named {name!r} (contexts are in {config_dir / 'contexts'})") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"Docker context {name!r}: cannot read {meta_file}: {exc}") from None
    tls = None
    tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
    if tls_dir.is_dir():
        files = {f: str(tls_dir / f) if (tls_dir / f).is_file() else None for f in ("ca.pem", "cert.pem", "key.pem")}
        tls = TlsOptions(
            verify=not docker_endpoint.get("SkipTLSVerify", False),
            ca_cert=files["ca.pem"],
            cert=files["cert.pem"],
            key=files["key.pem"],
        )
    return Endpoint(url, tls=tls if url.startswith("tcp://") else None, context=name)


def resolve_endpoint(spec: str | None, tls: TlsOptions | None = None, env: Mapping[str, str] | None = None) -> Endpoint:
    """Return the endpoint that ``spec`` names: a URL, a context name, or (None) what the environment says.

    Without ``spec``: $DOCKER_HOST, else $DOCKER_CONTEXT or the CLI's current context, else the
    default socket. Explicit ``tls`` options win over DOCKER_TLS_VERIFY/DOCKER_CERT_PATH and over a
    context's certificates. Raises UsageError for TLS options on a daemon that is not tcp://, and
    NotFoundError for an unknown context.
    """
    env = os.environ if env is None else env
    config_dir = docker_config_dir(env)
    if not spec:
        spec = env.get("DOCKER_HOST") or env.get("DOCKER_CONTEXT") or _current_context(config_dir) or DEFAULT_SOCKET
    if "://" in spec:
        endpoint = Endpoint(spec, tls=_env_tls(env) if spec.startswith("tcp://") else None)
    else:
        endpoint = _context_endpoint(spec, config_dir)
    if tls is not None and tls.given:
        if not endpoint.url.startswith("tcp://"):
            raise UsageError(f"TLS options apply only to tcp:// daemons, not to {endpoint.url}")
        endpoint = Endpoint(endpoint.url, tls=_with_default_files(tls, env), context=endpoint.context)
    return endpoint


def _current_context(config_dir: Path) -> str | None:
    """Return the context that `docker context use` selected, or None (also for an unreadable config)."""
    try:
        name = json.loads((config_dir / "config.json").read_text()).get("currentContext")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name and name != "default" else None


def _with_default_files(tls: TlsOptions, env: Mapping[str, str]) -> TlsOptions:
    """Fill in the files Docker's CLI defaults to (in $DOCKER_CERT_PATH or ~/.docker) when they exist."""
    base = Path(env.get("DOCKER_CERT_PATH") or docker_config_dir(env))

    def default(given: str | None, name: str) -> str | None:
        return given or (str(base / name) if (base / name).is_file() else None)

    return TlsOptions(tls.verify, default(tls.ca_cert, "ca.pem"), default(tls.cert, "cert.pem"), default(tls.key, "key.pem"))


def _tls_config(tls: TlsOptions) -> docker.tls.TLSConfig:
    """Return the SDK's TLS settings. Raises UsageError for missing files or a lone cert or key."""
    for path in (tls.ca_cert, tls.cert, tls.key):
        if path and not os.path.isfile(path):
            raise UsageError(f"TLS file not found: {path}")
    if bool(tls.cert) != bool(tls.key):
        raise UsageError("TLS needs both a client certificate and its key (--tlscert and --tlskey)")
    if tls.verify and not tls.ca_cert:
        raise UsageError("--tlsverify needs a CA certificate (--tlscacert, or ca.pem in $DOCKER_CERT_PATH or ~/.docker)")
    import docker.tls

    return docker.tls.TLSConfig(
        client_cert=(tls.cert, tls.key) if tls.cert else None,
        ca_cert=tls.ca_cert if tls.verify else None,
        verify=tls.verify,
    )


def connect(host: str | None = None, tls: TlsOptions | None = None) -> DockerHost:
    """Return a connection to the daemon ``host`` names (a URL or context name), or to the one
    DOCKER_HOST, DOCKER_CONTEXT or the CLI's current context names, or to the default socket.

    Raises DockerUnavailable if no daemon answers there, UsageError for bad TLS settings,
    NotFoundError for an unknown context.
    """
    import docker  # the seam: the SDK loads with the first connection

    endpoint = resolve_endpoint(host, tls)
    url = endpoint.url
    with docker_errors(url):
        try:
            if endpoint.tls:
                # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace the daemon's CA, Docker's CLI
                # trusts only the CA it was given. The SDK asks for the API version while it is built,
                # so build it with a fixed (minimum) version, switch that off, then ask.
                client = docker.DockerClient(base_url=url, timeout=API_TIMEOUT, tls=_tls_config(endpoint.tls), version="1.24")
                client.api.trust_env = False
                client.api._version = client.api._retrieve_server_version()
            else:
                client = docker.DockerClient(base_url=url, timeout=API_TIMEOUT, tls=False)
            client.ping()
        except (OSError, *_ssh_errors(url)) as exc:  # type: ignore[misc]  # mypy cannot type a starred tuple of exception classes
            # paramiko connects while the client is built: refused, unknown host key, no usable key.
            raise DockerUnavailable(f"cannot reach the Docker daemon at {url}: {_reason(exc)}") from None
    return DockerHost(client=client, url=url, remote=endpoint.remote)


def _ssh_errors(url: str) -> tuple[type[BaseException], ...]:
    """Return paramiko's base exception, as a 1-tuple, for an ``ssh://`` url; else, or when paramiko
    is not installed, an empty tuple (other hosts need not pay for importing paramiko)."""
    if not url.startswith("ssh://"):
        return ()
    try:
        import paramiko
    except ImportError:
        return ()
    return (paramiko.SSHException,)
