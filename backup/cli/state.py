"""What the root command's options decide, shared by every command through ``ctx.obj``."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from backup.docker_host import DockerHost, connect
from backup.helper_image import resolve_helper_image


@dataclass
class State:
    host: str | None
    helper_image_option: str | None
    debug: bool

    @functools.cached_property
    def docker(self) -> DockerHost:
        """Return the connected daemon (connects on first use). Raises DockerUnavailable."""
        return connect(self.host)

    @functools.cached_property
    def helper_image(self) -> str:
        """Return the helper image, pulling it if needed. Raises HelperImageMissing."""
        return resolve_helper_image(self.docker, self.helper_image_option)
