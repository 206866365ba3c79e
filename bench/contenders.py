"""The contenders: one backup and one restore each, timed from the host.

Wall time is ``time.perf_counter`` around the subprocess. Commands that run on the host (volsafe,
restic, the host ``tar | zstd`` pipeline) run under ``/usr/bin/time -v`` (or a getrusage wrapper)
for peak RSS and CPU time; for the ``docker run`` recipes those would only measure the docker CLI,
so they are not reported.

| key        | backup                                                       | restore (into a fresh volume)              |
|------------|--------------------------------------------------------------|--------------------------------------------|
| volsafe    | ``volsafe backup VOL --to DIR --json [--level L] [--threads T]`` | ``volsafe restore ID --from DIR --to-volume NEW --json`` |
| volsafe-s3 | the same with ``--to s3://BUCKET/PREFIX`` (moto server)        | ``--from s3://BUCKET/PREFIX``               |
| tar        | ``docker run --rm -v VOL:/data:ro -v DIR:/backup IMAGE tar -cf /backup/x.tar -C /data .`` | ``... -v NEW:/data ... tar -xf``  |
| tgz        | the same with ``tar -czf`` (busybox gzip -6)                   | ``tar -xzf``                                |
| restic     | ``restic backup .`` in the volume's mountpoint (repo v2, zstd auto) | ``restic restore latest --target NEWMOUNT`` |
| host-zstd  | ``tar -cf - -C MOUNT . | zstd -T0 -3 -o FILE`` (no Docker)     | ``zstd -d -c FILE | tar -xf - -C NEWMOUNT`` |
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.common import BENCH_LABEL, MB, ROOT, State, VolumeRemovals, container_name, create_volume, dir_size, docker, label_args, log, machine_cpu_s, run, settle

# Backups are compared with BACKUP_REF (no Docker: the machine's limit), restores with RESTORE_REF (the recipe).
from bench.report import BACKUP_REF, FLOOR_BACKUP, GZIP_BACKUP, RESTORE_REF

ALL_KEYS = ("volsafe", "volsafe-s3", "tar", "tgz", "restic", "host-zstd")
DEFAULT_KEYS = ALL_KEYS
BIG_DEFAULT_KEYS = ("volsafe", "tar", "host-zstd")
S3_BUCKET = "vsbench"


class Ctx:
    """What every contender needs: image, work dir, environment, how to run volsafe, the S3 server."""

    def __init__(self, image: str, workdir: str, threads: int | None = None, drop_caches: bool = False, target: str = "inside", durable: bool = True):
        self.image = image
        self.workdir = workdir
        self.threads = threads
        self.drop_caches = drop_caches  # sync + drop the page cache before every timed run
        self.target = target  # where each restore's fresh volume is created: "inside" or "outside" the timer (TARGETS)
        # Time until the written data is on disk: a sync after each command, inside its time. Removing a
        # container syncs the filesystem (volsafe's helper, the recipe's --rm); restic and the host pipeline
        # would otherwise leave their writes dirty, to be dropped unwritten when the volume is removed.
        self.durable = durable
        # Run the working tree's volsafe, whatever the installed entry point points at.
        pp = os.environ.get("PYTHONPATH")
        self.env = {**os.environ, "VOLSAFE_HELPER_IMAGE": image, "PYTHONPATH": str(ROOT) + (os.pathsep + pp if pp else "")}
        self.volsafe = [sys.executable, "-c", "import sys; from backup.cli import main; sys.exit(main(sys.argv[1:]))"]
        self.gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
        self.s3: MotoServer | None = None
        self.removals: VolumeRemovals | None = None  # other clients' volume removals, to flag the runs they may have stalled

    def timed(self, cmd: list[str], *, env: dict | None = None, rusage: bool = True, cwd: str | None = None) -> dict:
        """Run ``cmd`` after an untimed sync (and cache drop) and, when ``durable``, a timed sync after it; return
        seconds (the command plus that sync), command_s, sync_after_s, load before, sync_s (drop_s), and (if
        rusage) peak RSS and CPU."""
        usage_file = os.path.join(self.workdir, f"usage-{secrets.token_hex(4)}.txt")
        if rusage and self.gnu_time:
            full = [self.gnu_time, "-v", "-o", usage_file, *cmd]
        elif rusage:
            wrapper = (
                "import json,resource,subprocess,sys;r=subprocess.call(sys.argv[2:]);"
                "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
                "open(sys.argv[1],'w').write(json.dumps([u.ru_maxrss,u.ru_utime,u.ru_stime]));sys.exit(r)"
            )
            full = [sys.executable, "-c", wrapper, usage_file, *cmd]
        else:
            full = cmd
        if cwd:
            full = ["sh", "-c", 'cd "$0" && exec "$@"', cwd, *full]
        settled = settle(self.drop_caches)
        started = time.time()  # wall clock, to match Docker's event times (VolumeRemovals)
        busy = machine_cpu_s()
        wall, out, _err = run(full, env=env)
        busy = machine_cpu_s() - busy
        r = {"seconds": wall, "command_s": wall, "machine_cpu_s": busy, **settled, "stdout": out, "started": started, "ended": time.time()}
        if self.durable:
            t = time.perf_counter()
            os.sync()
            r["sync_after_s"] = time.perf_counter() - t
            r["seconds"] = wall + r["sync_after_s"]
        if rusage:
            r.update(parse_usage(Path(usage_file).read_text(), gnu=bool(self.gnu_time)))
            os.unlink(usage_file)
        return r


def parse_usage(text: str, gnu: bool = True) -> dict:
    """Peak RSS (MB) and CPU seconds from ``/usr/bin/time -v`` output (or the wrapper's JSON)."""
    rss_kb = user = sys_ = None
    if gnu:
        for line in text.splitlines():
            key, _, value = line.strip().rpartition(": ")
            if key == "Maximum resident set size (kbytes)":
                rss_kb = int(value)
            elif key == "User time (seconds)":
                user = float(value)
            elif key == "System time (seconds)":
                sys_ = float(value)
    else:
        rss_kb, user, sys_ = json.loads(text)
    return {"peak_rss_mb": rss_kb * 1024 / MB if rss_kb else None, "cpu_user_s": user, "cpu_sys_s": sys_}


# --------------------------------------------------------------------------------------------
# moto's S3 server, in its own process (it keeps objects in memory or spooled temp files)


class MotoServer:
    def __init__(self, workdir: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TMPDIR": workdir}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        State.procs.append(self.proc)
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start (pip install 'moto[server,s3]')") from None
                time.sleep(0.2)
        self.client().create_bucket(Bucket=S3_BUCKET)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")

    def delete_prefix(self, prefix: str) -> None:
        c = self.client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                c.delete_objects(Bucket=S3_BUCKET, Delete={"Objects": keys})


# --------------------------------------------------------------------------------------------
# Contenders. backup() returns a dict with at least seconds, load_before and stored_size;
# restore() gets that dict back; discard() frees what backup() stored.


class Contender:
    key = ""
    backup_name = ""
    restore_name = ""

    def backup(self, ctx: Ctx, volume: str, mount: str, outdir: str) -> dict:
        raise NotImplementedError

    def restore(self, ctx: Ctx, res: dict, volume: str, mount: str | None) -> dict:
        raise NotImplementedError

    def discard(self, ctx: Ctx, res: dict) -> None:
        shutil.rmtree(res["dir"], ignore_errors=True)


class Volsafe(Contender):
    def __init__(self, level: int | None = None, s3: bool = False):
        self.level, self.s3 = level, s3
        where = "S3, moto" if s3 else "local"
        lvl = f", level {level}" if level is not None else ""
        self.key = "volsafe-s3" if s3 else "volsafe"
        self.backup_name = f"volsafe backup ({where}{lvl})"
        self.restore_name = f"volsafe restore ({where}{lvl})"

    def _env(self, ctx: Ctx) -> dict:
        return {**ctx.env, **(ctx.s3.env if self.s3 else {})}

    def backup(self, ctx, volume, mount, outdir):
        if self.s3:
            prefix = f"{State.token}/{os.path.basename(outdir)}/{secrets.token_hex(2)}"
            loc, d = f"s3://{S3_BUCKET}/{prefix}", None
        else:
            d = os.path.join(outdir, f"volsafe-{self.level or 'default'}-{secrets.token_hex(2)}")
            os.makedirs(d)
            loc, prefix = d, None
        args = ["backup", volume, "--to", loc, "--json"]
        if self.level is not None:
            args += ["--level", str(self.level)]
        if ctx.threads:
            args += ["--threads", str(ctx.threads)]
        r = ctx.timed([*ctx.volsafe, *args], env=self._env(ctx))
        (record,) = json.loads(r.pop("stdout"))
        r.update(
            backup_id=record["id"],
            tar_size=record["size"],
            stored_size=record["stored_size"],
            entries=record["entries"],
            location=loc,
            dir=d,
            prefix=prefix,
        )
        return r

    def restore(self, ctx, res, volume, mount):
        r = ctx.timed([*ctx.volsafe, "restore", res["backup_id"], "--from", res["location"], "--to-volume", volume, "--json"], env=self._env(ctx))
        r.pop("stdout")
        return r

    def discard(self, ctx, res):
        if self.s3:
            ctx.s3.delete_prefix(res["prefix"])
        else:
            shutil.rmtree(res["dir"], ignore_errors=True)


class Recipe(Contender):
    """The Docker-docs recipe, verbatim apart from a name and a label for clean-up."""

    def __init__(self, gzip: bool):
        self.gzip = gzip
        self.key = "tgz" if gzip else "tar"
        self.backup_name = GZIP_BACKUP if gzip else FLOOR_BACKUP
        self.restore_name = "recipe tar -xzf" if gzip else RESTORE_REF
        self.file = "x.tar.gz" if gzip else "x.tar"

    def _run(self, ctx, what, volume, mode, directory, tar_args):
        cmd = [
            "docker",
            "run",
            "--rm",
            "--name",
            container_name(what),
            *label_args(),
            "-v",
            f"{volume}:/data{mode}",
            "-v",
            f"{directory}:/backup",
            ctx.image,
            "tar",
            *tar_args,
        ]
        r = ctx.timed(cmd, rusage=False)
        r.pop("stdout")
        return r

    def backup(self, ctx, volume, mount, outdir):
        d = os.path.join(outdir, f"{self.key}-{secrets.token_hex(2)}")
        os.makedirs(d)
        r = self._run(ctx, self.key, volume, ":ro", d, ["-czf" if self.gzip else "-cf", f"/backup/{self.file}", "-C", "/data", "."])
        r.update(stored_size=os.path.getsize(os.path.join(d, self.file)), dir=d)
        return r

    def restore(self, ctx, res, volume, mount):
        return self._run(ctx, "un" + self.key, volume, "", res["dir"], ["-xzf" if self.gzip else "-xf", f"/backup/{self.file}", "-C", "/data"])


class Restic(Contender):
    key = "restic"
    backup_name = "restic backup"
    restore_name = "restic restore"

    def _env(self, ctx, repo):
        return {
            **ctx.env,
            "RESTIC_PASSWORD": "volsafe-bench",
            "RESTIC_REPOSITORY": repo,
            "RESTIC_CACHE_DIR": os.path.join(os.path.dirname(repo), "cache"),
        }

    def backup(self, ctx, volume, mount, outdir):
        d = os.path.join(outdir, f"restic-{secrets.token_hex(2)}")
        repo = os.path.join(d, "repo")
        os.makedirs(d)
        env = self._env(ctx, repo)
        run(["restic", "init", "--repository-version", "2", "-q"], env=env)  # untimed
        # `restic backup .` in the mountpoint: the same files as the mountpoint's absolute path, but stored
        # relative, so that `restic restore latest --target NEWMOUNT` lands in the new volume's root.
        r = ctx.timed(["restic", "backup", "-q", "--host", "vsbench", "."], env=env, cwd=mount)
        r.pop("stdout")
        r.update(stored_size=dir_size(repo), dir=d, repo=repo)
        return r

    def restore(self, ctx, res, volume, mount):
        script, env = host_restore_shell('exec restic restore -q latest --target "$MOUNT"', volume, mount, self._env(ctx, res["repo"]))
        r = ctx.timed(["bash", "-c", script], env=env)
        r.pop("stdout")
        return r


class HostZstd(Contender):
    """No Docker in the path: the machine's limit for this job."""

    key = "host-zstd"
    backup_name = BACKUP_REF
    restore_name = "host zstd -d | tar -x"

    def backup(self, ctx, volume, mount, outdir):
        d = os.path.join(outdir, f"host-{secrets.token_hex(2)}")
        os.makedirs(d)
        f = os.path.join(d, "x.tar.zst")
        r = ctx.timed(["bash", "-c", 'set -o pipefail; tar --numeric-owner -cf - -C "$1" . | zstd -q -T0 -3 -o "$2"', "host-zstd", mount, f])
        r.pop("stdout")
        r.update(stored_size=os.path.getsize(f), dir=d, file=f)
        return r

    def restore(self, ctx, res, volume, mount):
        script, env = host_restore_shell('zstd -q -d -c "$1" | tar --numeric-owner -xf - -C "$MOUNT"', volume, mount, ctx.env)
        r = ctx.timed(["bash", "-c", script, "host-unzstd", res["file"]], env=env)
        r.pop("stdout")
        return r


# Where each restore's fresh target volume is created. "inside": in the timed command, for every
# contender (volsafe --to-volume NEW and the recipe's `docker run -v NEW:/data` create it themselves;
# the host-side restores run `docker volume create` + `inspect` first, in the same timed shell).
# "outside": before the timer, for every contender (volsafe then restores into an existing empty
# volume, which it checks for emptiness with a helper container: part of its cost in that use).
TARGETS = ("inside", "outside")

# The timed shell of a host-side restore: the target's mountpoint is $MOUNT, created here when empty.
_HOST_TARGET = (
    "set -eo pipefail; "
    'if [ -z "$MOUNT" ]; then docker volume create --label "$LABEL" "$VOLUME" >/dev/null; '
    'MOUNT=$(docker volume inspect -f "{{.Mountpoint}}" "$VOLUME"); fi; '
)


def host_restore_shell(script: str, volume: str, mount: str | None, env: dict) -> tuple[str, dict]:
    """The bash script and environment of a host-side restore into ``volume``: ``script`` writes into
    ``"$MOUNT"``, which is ``mount`` (created before the timer) or, when ``mount`` is None, the
    mountpoint of ``volume`` created by the same timed script."""
    return _HOST_TARGET + script, {**env, "VOLUME": volume, "MOUNT": mount or "", "LABEL": f"{BENCH_LABEL}={State.token}"}


def make_contenders(keys: list[str], levels: list[int | None]) -> list[Contender]:
    """Contenders in the order given; ``volsafe`` once per level; S3 at the first level only."""
    out: list[Contender] = []
    for k in keys:
        if k == "volsafe":
            out += [Volsafe(level) for level in levels]
        elif k == "volsafe-s3":
            out.append(Volsafe(levels[0], s3=True))
        elif k in ("tar", "tgz"):
            out.append(Recipe(gzip=k == "tgz"))
        elif k == "restic":
            out.append(Restic())
        elif k == "host-zstd":
            out.append(HostZstd())
        else:
            raise ValueError(f"unknown contender {k!r} (choose from {', '.join(ALL_KEYS)})")
    return out


def check_tools(contenders: list[Contender]) -> list[str]:
    """What is missing on this host for these contenders, as install hints."""
    missing = []
    keys = {c.key for c in contenders}
    if "restic" in keys and not shutil.which("restic"):
        missing.append("restic: apt-get install -y restic")
    if "host-zstd" in keys and not shutil.which("zstd"):
        missing.append("zstd: apt-get install -y zstd")
    if "volsafe-s3" in keys:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            missing.append("moto server: pip install 'moto[server,s3]>=5.0'")
    return missing


def rotate(seq: list, k: int) -> list:
    """``seq`` rotated left by ``k`` (each round starts with a different contender)."""
    if not seq:
        return []
    k %= len(seq)
    return seq[k:] + seq[:k]


def discard_quietly(ctx: Ctx, c: Contender, res: dict) -> None:
    try:
        c.discard(ctx, res)
    except Exception as exc:  # noqa: BLE001
        log(f"discarding {c.backup_name}'s backup: {exc}")


__all__ = [
    "ALL_KEYS",
    "BACKUP_REF",
    "BIG_DEFAULT_KEYS",
    "Contender",
    "Ctx",
    "DEFAULT_KEYS",
    "FLOOR_BACKUP",
    "GZIP_BACKUP",
    "MotoServer",
    "RESTORE_REF",
    "TARGETS",
    "check_tools",
    "create_volume",
    "discard_quietly",
    "docker",
    "make_contenders",
    "rotate",
]
