"""Choosing the helper image, and building a minimal one offline from a static busybox binary."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from backup.docker.host import DockerHost, docker_errors
from backup.errors import HelperImageMissing, NotFoundError, VolsafeError
from backup.docker.volume_tar import GNU_TAR_LABEL

told = logging.getLogger("volsafe.images")  # shown on stderr: an image copied to another daemon

#: What ``volsafe helper-image build`` produces, and what is used first when present.
LOCAL_IMAGE = "volsafe-helper:latest"
#: The public image used otherwise, pulled on first use.
PUBLIC_IMAGE = "busybox:stable"
DEFAULT_BUSYBOX = "/bin/busybox"
DEFAULT_GNU_TAR = "/usr/bin/tar"
GNU_TAR_PATH = "/usr/libexec/volsafe/gtar"  # beside busybox's tar applet, which restore uses


def _present(host: DockerHost, image: str) -> bool:
    try:
        with docker_errors(host):
            host.api.inspect_image(image)
    except NotFoundError:
        return False
    return True


def resolve_helper_image(host: DockerHost, requested: str | None, *, ship_from: tuple[DockerHost, str] | None = None) -> str:
    """Return the image to run helpers from, copying or pulling it if needed.

    ``requested`` (from --helper-image or VOLSAFE_HELPER_IMAGE) wins; otherwise a locally built
    ``volsafe-helper:latest`` if present, else ``busybox:stable``. When none is present and
    ``ship_from`` is (another daemon, its helper image), that image is copied from there through
    the Docker API (``copy_image``: no registry needed); otherwise, or if that fails, it is pulled.
    Raises HelperImageMissing, with instructions, when the image is absent and can be neither
    copied nor pulled.
    """
    candidates = [requested] if requested else [LOCAL_IMAGE, PUBLIC_IMAGE]
    for image in candidates:
        if _present(host, image):
            return image
    image = candidates[-1]
    shipped = ""
    if ship_from is not None:
        source, image = ship_from
        try:
            copy_image(source, host, image)
            return image
        except VolsafeError as exc:
            shipped = f"could not be copied from {source.url} ({exc}), "
    try:
        with docker_errors(host):
            host.client.images.pull(image)
        return image
    except VolsafeError as exc:
        raise HelperImageMissing(
            f"helper image {image!r} is not on {host.url}, {shipped}and could not be pulled ({exc}); "
            f"pull or load an image that has busybox tar, or build one offline with "
            f"'volsafe helper-image build' (needs a static busybox, e.g. Debian's busybox-static), "
            f"or pass --helper-image / set VOLSAFE_HELPER_IMAGE"
        ) from None


def copy_image(source: DockerHost, target: DockerHost, image: str) -> None:
    """Copy ``image`` (with its tag) from ``source`` to ``target``: ``docker save`` there, ``docker load``
    here, through each daemon's API (so over ssh:// and tcp:// too; no registry). Logs one line.

    The saved image goes through a temporary file, so the upload has a length and needs no
    chunked request (which not every transport passes on). Raises VolsafeError if the source
    lacks the image or the target refuses it.
    """
    started = time.monotonic()
    told.info("copying helper image %s from %s to %s (the target does not have it)", image, source.url, target.url)
    with tempfile.TemporaryFile(prefix="volsafe-image-") as saved:
        with docker_errors(source):
            for chunk in source.api.get_image(image):
                saved.write(chunk)
        size = saved.tell()
        saved.seek(0)
        with docker_errors(target):
            for message in target.api.load_image(saved):
                if isinstance(message, dict) and message.get("error"):
                    raise VolsafeError(f"{target.url} refused image {image!r}: {message['error']}")
    if not _present(target, image):
        raise VolsafeError(f"{target.url} loaded the saved image but has no {image!r} afterwards")
    told.info("copied helper image %s to %s (%.1f MB, %.1f s)", image, target.url, size / 1e6, time.monotonic() - started)


def busybox_rootfs(busybox: Path, applets: list[str], extra_files: dict[str, Path] | None = None) -> bytes:
    """Return a tar of a root filesystem holding ``/bin/busybox``, a symlink per applet, and
    ``extra_files`` (path in the image -> file on this host, links followed)."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        files = {"bin/busybox": busybox, **{k.lstrip("/"): v for k, v in (extra_files or {}).items()}}
        parents = {"bin", "tmp"} | {str(p) for name in files for p in Path(name).parents if str(p) != "."}
        for directory in sorted(parents):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755, now
            tar.addfile(info)
        for name, source in sorted(files.items()):
            data = source.read_bytes()
            info = tarfile.TarInfo(name)
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


def gnu_tar_files(tar: str = DEFAULT_GNU_TAR) -> dict[str, Path]:
    """Return the files that run this host's GNU tar in an image: the binary at GNU_TAR_PATH and
    the shared libraries ``ldd`` names, at their own paths (none for a static tar). Empty if ``tar``
    is missing, is not GNU tar 1.28 or later (``--sort=name``), or a library cannot be found."""
    try:
        version = subprocess.run([tar, "--version"], check=True, capture_output=True, text=True, timeout=30).stdout
        listed = subprocess.run(["ldd", tar], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    found = re.match(r"tar \(GNU tar\) (\d+)\.(\d+)", version)
    if not found or (int(found[1]), int(found[2])) < (1, 28):
        return {}
    files = {GNU_TAR_PATH: Path(tar)}
    if listed.returncode != 0:
        return files if "not a dynamic executable" in listed.stdout + listed.stderr else {}
    for line in listed.stdout.splitlines():
        if "not found" in line:
            return {}  # a tar that would not run in the image
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        path = next((word for word in line.split() if word.startswith("/")), None)
        if path and Path(path).is_file():
            files[path] = Path(path)
    return files


def build_helper_image(
    host: DockerHost, busybox: str = DEFAULT_BUSYBOX, tag: str = LOCAL_IMAGE, gnu_tar: str | None = DEFAULT_GNU_TAR
) -> str:
    """Import a busybox image into the daemon under ``tag``; return the tag.

    With ``gnu_tar`` (a path; None for none), this host's GNU tar and its libraries go in too, and
    the image's label names it, so that local backups can take the FIFO path (backup.docker.volume_tar).
    Uses the daemon's import endpoint (``docker import``), so no registry is needed. Raises
    VolsafeError if the busybox binary is missing or not runnable.
    """
    path = Path(busybox)
    if not path.is_file():
        raise NotFoundError(f"no busybox binary at {busybox} (apt-get install busybox-static)")
    extra = gnu_tar_files(gnu_tar) if gnu_tar else {}
    rootfs = busybox_rootfs(path, busybox_applets(path), extra)
    repository, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    changes = [f"LABEL {GNU_TAR_LABEL}={GNU_TAR_PATH}"] if extra else None
    with docker_errors(host):
        host.api.import_image_from_data(rootfs, repository=repository, tag=version, changes=changes)
    return tag
