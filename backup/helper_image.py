"""Choosing the helper image, and building a minimal one offline from a static busybox binary."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path

from backup.docker_host import DockerHost, docker_errors
from backup.errors import HelperImageMissing, NotFoundError, VolsafeError

#: What ``volsafe helper-image build`` produces, and what is used first when present.
LOCAL_IMAGE = "volsafe-helper:latest"
#: The public image used otherwise, pulled on first use.
PUBLIC_IMAGE = "busybox:stable"
DEFAULT_BUSYBOX = "/bin/busybox"


def _present(host: DockerHost, image: str) -> bool:
    try:
        with docker_errors(host):
            host.api.inspect_image(image)
    except NotFoundError:
        return False
    return True


def resolve_helper_image(host: DockerHost, requested: str | None) -> str:
    """Return the image to run helpers from, pulling it if needed.

    ``requested`` (from --helper-image or VOLSAFE_HELPER_IMAGE) wins; otherwise a locally built
    ``volsafe-helper:latest`` if present, else ``busybox:stable``. Raises HelperImageMissing, with
    instructions, when the image is absent and cannot be pulled.
    """
    candidates = [requested] if requested else [LOCAL_IMAGE, PUBLIC_IMAGE]
    for image in candidates:
        if _present(host, image):
            return image
    image = candidates[-1]
    try:
        with docker_errors(host):
            host.client.images.pull(image)
        return image
    except VolsafeError as exc:
        raise HelperImageMissing(
            f"helper image {image!r} is not on {host.url} and could not be pulled ({exc}); "
            f"pull or load an image that has busybox tar, or build one offline with "
            f"'volsafe helper-image build' (needs a static busybox, e.g. Debian's busybox-static), "
            f"or pass --helper-image / set VOLSAFE_HELPER_IMAGE"
        ) from None


def busybox_rootfs(busybox: Path, applets: list[str]) -> bytes:
    """Return a tar of a root filesystem holding ``/bin/busybox`` and a symlink per applet."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755, now
            tar.addfile(info)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, now
        tar.addfile(info, io.BytesIO(data))
        for applet in sorted(set(applets)):
            # "busybox" is itself in the applet list: linking it would overwrite the binary.
            if applet == "busybox" or "/" in applet or not applet:
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "busybox", 0o777, now
            tar.addfile(link)
    return buf.getvalue()


def busybox_applets(busybox: Path) -> list[str]:
    """Return the applet names the busybox binary provides. Raises VolsafeError if it cannot run."""
    try:
        out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise VolsafeError(
            f"cannot run {busybox} --list ({exc}); install a static busybox (apt-get install busybox-static)"
        ) from None
    return out.stdout.split()


def build_helper_image(host: DockerHost, busybox: str = DEFAULT_BUSYBOX, tag: str = LOCAL_IMAGE) -> str:
    """Import a busybox-only image into the daemon under ``tag``; return the tag.

    Uses the daemon's import endpoint (``docker import``), so no registry is needed. Raises
    VolsafeError if the busybox binary is missing or not runnable.
    """
    path = Path(busybox)
    if not path.is_file():
        raise NotFoundError(f"no busybox binary at {busybox} (apt-get install busybox-static)")
    rootfs = busybox_rootfs(path, busybox_applets(path))
    repository, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    with docker_errors(host):
        host.api.import_image_from_data(rootfs, repository=repository, tag=version)
    return tag
