"""Test helpers: fill a volume with tricky content, and snapshot a volume's tree for comparison.

The snapshot is read through Docker's archive endpoint and parsed with Python's tarfile, a path
independent of volsafe's restore (busybox tar in a helper), so a restore bug cannot hide itself.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from dataclasses import dataclass

import docker.errors
from docker.types import Mount

# 250-byte file name, and a path deeper than 300 characters.
LONG_NAME = "L" * 246 + ".dat"
DEEP_DIR = "/".join(["deep-directory-level-%02d" % i for i in range(14)])

TRICKY_SCRIPT = rf"""
set -eu
cd /v
mkdir -p dir/sub empty-dir "{DEEP_DIR}"
printf 'hello\n' > dir/sub/file.txt
head -c 300000 /dev/urandom > dir/blob.bin
printf 'deep\n' > "{DEEP_DIR}/leaf.txt"
printf 'spaces\n' > "name with spaces"
printf 'newline\n' > "$(printf 'new\nline')"
printf 'unicode\n' > "ünïcødé-名前-🙂.txt"
printf 'long\n' > "{LONG_NAME}"
ln -s dir/sub/file.txt rel-link
ln -s /etc/passwd abs-link
ln -s does/not/exist dangling-link
printf 'shared\n' > hard-a && ln hard-a hard-b && ln hard-a dir/hard-c
printf 'x\n' > suid-hard && chown 4321:8765 suid-hard && chmod 4755 suid-hard && ln suid-hard suid-hard-2
printf 'y\n' > sgid && chown 1000:1000 sgid && chmod 2750 sgid
mkdir sticky && chmod 1777 sticky
printf 'z\n' > nobody-file && chown 65534:65534 nobody-file && chmod 0640 nobody-file
printf 'w\n' > unnamed-ids && chown 123456:654321 unnamed-ids
mkfifo fifo && chmod 0620 fifo
mknod char-dev c 1 3 && mknod block-dev b 7 200
mkdir -p pgdata/base && printf 'PG\n' > pgdata/base/1 && chown -R 999:999 pgdata && chmod 0700 pgdata && chmod 0600 pgdata/base/1
touch -d '2001-02-03 04:05:06' dir/sub/file.txt dir/blob.bin
touch -h -d '2002-03-04 05:06:07' rel-link dangling-link
touch -d '2003-04-05 06:07:08' dir/sub dir empty-dir pgdata/base pgdata
touch -d '2004-05-06 07:08:09' .
"""


def run_in_volume(host, image: str, volume: str, script: str) -> str:
    """Run a shell script as root in a throwaway container with ``volume`` at /v; return its output."""
    out = host.client.containers.run(
        image,
        ["sh", "-c", script],
        mounts=[Mount("/v", volume, type="volume")],
        network_mode="none",
        remove=True,
        stderr=True,
    )
    return out.decode(errors="replace")


def staged_bytes(host, volume: str) -> int:
    """Bytes a restore has written so far under its ``.volsafe-restore-*`` staging directory in
    ``volume`` (0 while the volume does not exist). Read on the host through the volume's mountpoint
    (the tests run as root beside the daemon): a few milliseconds, where a helper container per
    look took half a second, long enough for a fast machine to finish the restore between looks."""
    try:
        root = Path(host.api.inspect_volume(volume)["Mountpoint"])
    except docker.errors.NotFound:
        return 0
    return sum(p.stat().st_size for staging in root.glob(".volsafe-restore-*") for p in staging.rglob("*") if p.is_file())


def fill_tricky(host, image: str, volume: str) -> None:
    """Create ``volume`` (if needed) and fill it with every kind of entry the fidelity rules name."""
    host.api.create_volume(volume)
    run_in_volume(host, image, volume, TRICKY_SCRIPT)


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    sha256: str
    link: str
    device: tuple[int, int]


def snapshot(host, image: str, volume: str) -> tuple[dict[str, Entry], set[frozenset[str]]]:
    """Return every entry of the volume by path, and the groups of paths that are hard links of one file."""
    container = host.api.create_container(
        image, ["true"], host_config=host.api.create_host_config(mounts=[Mount("/v", volume, type="volume", read_only=True)])
    )["Id"]
    try:
        stream, _ = host.api.get_archive(container, "/v/.")
        data = b"".join(stream)
    finally:
        host.api.remove_container(container, force=True)
    entries: dict[str, Entry] = {}
    link_targets: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            name = m.name[2:] if m.name.startswith("./") else m.name
            content = b""
            if m.isfile():
                content = tar.extractfile(m).read()
            if m.islnk():
                target = m.linkname[2:] if m.linkname.startswith("./") else m.linkname
                link_targets[name] = target
                base = entries[target]
                entries[name] = base
                continue
            kind = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.FIFOTYPE: "fifo",
                    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block"}[m.type if m.type != tarfile.AREGTYPE else tarfile.REGTYPE]
            entries[name] = Entry(
                kind=kind,
                mode=m.mode & 0o7777,
                uid=m.uid,
                gid=m.gid,
                mtime=int(m.mtime),
                size=m.size if m.isfile() else 0,
                sha256=hashlib.sha256(content).hexdigest() if m.isfile() else "",
                link=m.linkname if m.issym() else "",
                device=(m.devmajor, m.devminor) if m.ischr() or m.isblk() else (0, 0),
            )
    groups: dict[str, set[str]] = {}
    for name, target in link_targets.items():
        groups.setdefault(target, {target}).add(name)
    return entries, {frozenset(g) for g in groups.values()}


def unique_volumes(host, default_label: str, where: str = ""):
    """Generator fixture body: yield a maker of unique volume names on ``host``; afterwards remove
    every volume so named and fail if a volsafe helper that mounted one of them survived."""
    import secrets

    import docker

    from backup.docker.helper import LABEL as HELPER_LABEL

    names: list[str] = []

    def make(label: str = default_label) -> str:
        name = f"vstest-{label}-{secrets.token_hex(4)}"
        names.append(name)
        return name

    yield make
    api = host.api
    leftovers = [
        c
        for c in api.containers(all=True, filters={"label": f"{HELPER_LABEL}=true"})
        if c["Labels"].get("io.volsafe.volume") in names
    ]
    for c in leftovers:
        api.remove_container(c["Id"], force=True)
    for name in names:
        try:
            api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass
    assert not leftovers, f"helper containers left behind{where}: {[c['Names'] for c in leftovers]}"
