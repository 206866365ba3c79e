"""Test helper: a Docker host without the helper image for a while (the second daemon, to see
volsafe ship the image), and with it again afterwards, whatever happened: the host is shared by
the session."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import docker

from backup.docker.helper_image import build_helper_image


def image_present(host, image: str) -> bool:
    try:
        host.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    return True


@contextmanager
def without_image(host, image: str) -> Iterator[None]:
    """Remove the helper image ``image`` from ``host`` for the block; rebuild it afterwards unless
    the block brought it back (as migrate does when it ships the image)."""
    host.api.remove_image(image, force=True)
    assert not image_present(host, image)
    try:
        yield
    finally:
        if not image_present(host, image):
            build_helper_image(host, tag=image)
