"""Connecting to a Docker daemon, and turning Docker SDK errors into one-line volsafe errors."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import docker
import docker.errors
import requests.exceptions

from backup.errors import DockerUnavailable, NotFoundError, VolsafeError

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
    def daemon_id(self) -> str:
        """Return the daemon's ID as Docker reports it."""
        return str(self.info.get("ID", ""))

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

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, VolsafeError):
            return False
        if isinstance(exc, docker.errors.NotFound):
            raise NotFoundError(_api_message(exc)) from exc
        if isinstance(exc, docker.errors.APIError):
            raise VolsafeError(f"Docker daemon at {self.where}: {_api_message(exc)}") from exc
        if isinstance(exc, (requests.exceptions.ConnectionError, docker.errors.DockerException)):
            raise DockerUnavailable(
                f"cannot reach the Docker daemon at {self.where}: {_reason(exc)} "
                "(is dockerd running? set DOCKER_HOST or --host)"
            ) from exc
        return False


def _api_message(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc).strip()


def connect(host: str | None = None) -> DockerHost:
    """Return a connection to the daemon at ``host``, or at DOCKER_HOST, or the default socket.

    Raises DockerUnavailable if no daemon answers there.
    """
    url = host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    with docker_errors(url):
        if host:
            client = docker.DockerClient(base_url=host, timeout=API_TIMEOUT)
        else:
            client = docker.from_env(timeout=API_TIMEOUT)
        client.ping()
    return DockerHost(client=client, url=url)
