"""What the global options decide (before or after the command name), shared by every command through ``ctx.obj``."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backup.errors import UsageError, VolsafeError

if TYPE_CHECKING:
    from backup.config.schema import Config
    from backup.docker.host import DockerHost


@dataclass
class State:
    """The global options, and what they lead to, each loaded on first use: the config, the daemon,
    the helper image. The modules behind them load then too, so a command that needs none of them
    (--version, --help) does not pay for reading config files or importing the Docker SDK."""

    host: str | None = None
    helper_image_option: str | None = None
    debug: bool = False
    config_option: str | None = None

    def use_config(self, path: str | None) -> None:
        """Use the config file ``path`` (a subcommand's own --config) instead; None changes nothing."""
        if path:
            self.config_option = path
            self.__dict__.pop("config", None)

    @functools.cached_property
    def config(self) -> Config:
        """Return the validated config (loaded on first use), or the defaults. Raises ConfigError."""
        from backup.config.schema import load_config

        return load_config(self.config_option)

    @property
    def backends(self) -> dict:
        """Return the config's ``[backends.NAME]`` tables; with no config file to read, {} without
        importing the schema (``list --from DIR`` on a host without a config). Raises ConfigError."""
        if "config" not in self.__dict__:
            from backup.config.files import find_config

            if find_config(self.config_option) is None:
                return {}
        return self.config.backends

    @functools.cached_property
    def docker(self) -> DockerHost:
        """Return the connected daemon (connects on first use). Raises DockerUnavailable.

        --host wins, then $DOCKER_HOST, then the config's [docker] host.
        """
        docker = self.__dict__.pop("_asked_for_its_name", None) or self._connect()
        docker.host_name_override = self.configured_host_name
        _recover(docker)
        return docker

    @functools.cached_property
    def configured_host_name(self) -> str | None:
        """Return the host name $VOLSAFE_HOST_NAME (wins) or [docker] host_name set, else None.
        Raises UsageError for an invalid $VOLSAFE_HOST_NAME."""
        from backup.archive.hosts import configured_host_name

        return configured_host_name(self.config.host_name, os.environ)

    def this_host(self) -> str:
        """Return the name this host's backups are recorded under (asks the daemon only when no
        name is configured). Raises DockerUnavailable if the daemon must be asked and cannot be."""
        return self.configured_host_name or self.docker.host_name

    def this_host_if_known(self) -> str | None:
        """Return ``this_host()``, or None (with a note on the debug log) when the daemon cannot be asked."""
        if self.configured_host_name:
            return self.configured_host_name
        try:
            if "docker" in self.__dict__:
                return self.docker.host_name
            # Only to ask its name: no crash recovery for a command that needs no Docker. A command
            # that goes on to use the daemon (restore choosing among hosts) takes this connection
            # over instead of making a second one (the SDK asks version, _ping and info each time).
            if "_asked_for_its_name" not in self.__dict__:
                self.__dict__["_asked_for_its_name"] = self._connect()
            return self.__dict__["_asked_for_its_name"].host_name
        except VolsafeError as exc:
            logging.getLogger(__name__).debug("this host's name is unknown: %s", exc)
            return None

    def _connect(self) -> DockerHost:
        """Connect to the daemon: --host wins, then $DOCKER_HOST, then the config's [docker] host."""
        from backup.docker.host import connect

        host = self.host
        if not host and not os.environ.get("DOCKER_HOST"):
            host = self.config.docker_host
        return connect(host)

    @functools.cached_property
    def helper_image(self) -> str:
        """Return the helper image, pulling it if needed. Raises HelperImageMissing.

        --helper-image (or $VOLSAFE_HELPER_IMAGE) wins, then the config's [docker] helper_image.
        """
        from backup.docker.helper_image import resolve_helper_image

        return resolve_helper_image(self.docker, self.helper_image_option or self.config.helper_image)


def nonempty(ctx, param, value):
    """Option callback: refuse an empty value ("" or, repeated, any ""), which would otherwise mean
    the default (``--from ""``: the default store; ``--to-volume ""``: the source volume)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(v is not None and v.strip() == "" for v in values):
        raise UsageError(f"{param.opts[0]} must not be empty (is a variable in it unset?)")
    return value


def _recover(docker: DockerHost) -> None:
    """Before a command's own work: restart what a crashed volsafe left stopped, remove its helpers.

    A failure here is a warning: it must not stop the command the user asked for.
    """
    from backup.quiesce.recovery import recover  # imported late: only commands that talk to Docker need it

    try:
        recover(docker)
    except VolsafeError as exc:
        logging.getLogger("volsafe.recovery").warning("crash recovery skipped: %s", exc)
