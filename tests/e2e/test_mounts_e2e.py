"""End to end with the real daemon: every mount of a container (volume, bind, tmpfs), selectors,
path excludes, and the `volumes` overview."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat

import pytest
from docker.types import Mount

from tests.support.volume_tree import run_in_volume, snapshot

HELPER_LABEL = "io.volsafe.helper"


def _tree(root) -> dict[str, tuple]:
    """Return path -> (kind, mode, content) of a directory on this host (the daemon's host in the tests)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode), None)
            elif stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", 0, os.readlink(path))
            else:
                with open(path, "rb") as f:
                    found[rel] = ("file", stat.S_IMODE(info.st_mode), f.read())
    return found


def _exec(docker_host, container: str, script: str) -> str:
    exec_id = docker_host.api.exec_create(container, ["sh", "-c", script])["Id"]
    out = docker_host.api.exec_start(exec_id)
    assert docker_host.api.exec_inspect(exec_id)["ExitCode"] == 0, out
    return out.decode()


TMPFS_LISTING = "cd /run/mem && find . | sort && cat m.txt sub/n.txt && stat -c '%n %a %u' m.txt sub sub/n.txt"


@pytest.fixture
def app(docker_host, helper_image, volumes, tmp_path):
    """A running container with a named volume at /data, a bind mount at /srv/conf and a tmpfs at /run/mem."""
    volume = volumes("appvol")
    docker_host.api.create_volume(volume)
    run_in_volume(docker_host, helper_image, volume, "mkdir -p /v/db && echo rows > /v/db/t1 && chown -R 999:999 /v/db")
    bind = tmp_path / "conf"
    (bind / "sub").mkdir(parents=True)
    (bind / "app.conf").write_text("port = 8080\n")
    (bind / "sub" / "secret").write_bytes(os.urandom(5000))
    os.chmod(bind / "sub" / "secret", 0o600)
    os.symlink("app.conf", bind / "link")
    name = f"vstest-app-{secrets.token_hex(4)}"
    # The tmpfs content is written after start: it exists only in the running container's memory.
    container = docker_host.api.create_container(
        helper_image,
        ["sh", "-c", "mkdir /run/mem/sub && echo memory > /run/mem/m.txt && echo nested > /run/mem/sub/n.txt "
         "&& chmod 0640 /run/mem/m.txt && chown 1234 /run/mem/sub/n.txt && touch /run/mem/ready && sleep 3600"],
        name=name,
        host_config=docker_host.api.create_host_config(
            mounts=[
                Mount("/data", volume, type="volume"),
                Mount("/srv/conf", str(bind), type="bind"),
                Mount("/run/mem", None, type="tmpfs"),
            ],
            network_mode="none",
        ),
    )["Id"]
    others = []
    try:
        docker_host.api.start(container)
        for _ in range(100):
            if "ready" in _exec(docker_host, container, "ls /run/mem"):
                break
        yield {"name": name, "volume": volume, "bind": bind, "others": others}
    finally:
        for c in [container, *others]:
            docker_host.api.remove_container(c, force=True)
        leftovers = [
            c for c in docker_host.api.containers(all=True, filters={"label": f"{HELPER_LABEL}=true"})
            if str(tmp_path) in c["Labels"].get("io.volsafe.volume", "")
        ]
        for c in leftovers:
            docker_host.api.remove_container(c["Id"], force=True)
        assert not leftovers, "bind-mount helpers left behind"


def test_container_backup_makes_one_archive_per_mount_and_each_restores(app, docker_host, helper_image, volumes, volsafe, tmp_path):
    store = tmp_path / "store"
    name = app["name"]
    expected_tmpfs = _exec(docker_host, name, TMPFS_LISTING)
    before_volume = snapshot(docker_host, helper_image, app["volume"])

    done = volsafe("backup", "--container", name, "--to", str(store), "--json")
    assert done.code == 0, done.err
    records = {r["volume"]: r for r in json.loads(done.out)}
    bind_name, tmpfs_name = f"{name}.srv_conf", f"{name}.run_mem"
    assert set(records) == {app["volume"], bind_name, tmpfs_name}
    # Captured while the container runs: it was never stopped.
    assert docker_host.api.inspect_container(name)["State"]["Running"]
    mounts = {}
    for volume, record in records.items():
        with open(store / volume / (record["id"].split("@")[1] + ".json")) as f:
            mounts[volume] = json.load(f)["mount"]
    assert mounts[bind_name] == {"type": "bind", "source": str(app["bind"]), "destination": "/srv/conf", "container": name}
    assert mounts[tmpfs_name] == {"type": "tmpfs", "source": "", "destination": "/run/mem", "container": name}
    assert mounts[app["volume"]]["type"] == "volume" and mounts[app["volume"]]["destination"] == "/data"

    # Named volume: as usual.
    copy = volumes("appvol-copy")
    assert volsafe("restore", app["volume"], "--from", str(store), "--to-volume", copy).code == 0
    assert snapshot(docker_host, helper_image, copy) == before_volume

    # Bind mount: needs an explicit target; into a directory on the daemon's host, then refused when not empty.
    refused = volsafe("restore", bind_name, "--from", str(store))
    assert refused.code == 2 and "--to-path" in refused.err
    out = tmp_path / "restored-conf"
    out.mkdir()
    restored = volsafe("restore", bind_name, "--from", str(store), "--to-path", str(out))
    assert restored.code == 0, restored.err
    assert _tree(out) == _tree(app["bind"])
    again = volsafe("restore", bind_name, "--from", str(store), "--to-path", str(out))
    assert again.code == 1 and "not empty; use --force" in again.err
    (out / "stray").write_text("x")
    assert volsafe("restore", bind_name, "--from", str(store), "--to-path", str(out), "--force").code == 0
    assert _tree(out) == _tree(app["bind"])
    # ... or into a volume.
    bind_copy = volumes("bind-copy")
    assert volsafe("restore", bind_name, "--from", str(store), "--to-volume", bind_copy).code == 0
    tree, _ = snapshot(docker_host, helper_image, bind_copy)
    assert tree["app.conf"].sha256 == hashlib.sha256((app["bind"] / "app.conf").read_bytes()).hexdigest()
    assert tree["sub/secret"].mode == 0o600 and tree["link"].link == "app.conf"

    # tmpfs snapshot: into another running container's tmpfs, and into a volume.
    other = docker_host.api.create_container(
        helper_image, ["sleep", "3600"], name=f"vstest-other-{secrets.token_hex(4)}",
        host_config=docker_host.api.create_host_config(mounts=[Mount("/run/mem", None, type="tmpfs")], network_mode="none"),
    )["Id"]
    app["others"].append(other)
    docker_host.api.start(other)
    into = volsafe("restore", tmpfs_name, "--from", str(store), "--to-container", f"{other}:/run/mem")
    assert into.code == 0, into.err
    assert _exec(docker_host, other, TMPFS_LISTING) == expected_tmpfs
    assert _exec(docker_host, other, "ls -a /run/mem | grep -c volsafe || true").strip() == "0"
    busy = volsafe("restore", tmpfs_name, "--from", str(store), "--to-container", f"{other}:/run/mem")
    assert busy.code == 1 and "not empty" in busy.err
    mem_copy = volumes("mem-copy")
    assert volsafe("restore", tmpfs_name, "--from", str(store), "--to-volume", mem_copy).code == 0
    tree, _ = snapshot(docker_host, helper_image, mem_copy)
    assert {p for p in tree if p != "."} == {"m.txt", "sub", "sub/n.txt", "ready"}
    assert tree["m.txt"].mode == 0o640 and tree["sub/n.txt"].uid == 1234


def test_tmpfs_of_a_stopped_container_fails_on_its_own_line(app, docker_host, volsafe, tmp_path):
    docker_host.api.stop(app["name"], timeout=1)
    result = volsafe("backup", "--container", app["name"], "--to", str(tmp_path / "store"))
    assert result.code == 1
    assert f"backup of {app['name']}.run_mem failed" in result.err and "not running" in result.err
    listed = json.loads(volsafe("list", "--from", str(tmp_path / "store"), "--json").out)
    assert {r["volume"] for r in listed} == {app["volume"], f"{app['name']}.srv_conf"}


def _labelled(docker_host, volumes, label: str, labels: dict) -> str:
    name = volumes(label)
    docker_host.api.create_volume(name, labels=labels)
    return name


def _backed_up(result) -> set[str]:
    assert result.code == 0, result.err
    return {r["volume"] for r in json.loads(result.out)}


def test_selectors_pick_exactly_the_right_volumes(docker_host, volumes, volsafe, tmp_path):
    tag = secrets.token_hex(4)
    project, other_project = f"shop{tag}", f"blog{tag}"
    db = _labelled(docker_host, volumes, "db", {"vstest.sel": tag, "com.docker.compose.project": project})
    cache = _labelled(docker_host, volumes, "cache", {"vstest.sel": tag, "com.docker.compose.project": project, "tier": "cache"})
    blog = _labelled(docker_host, volumes, "blog", {"vstest.sel": "other" + tag, "com.docker.compose.project": other_project})
    store = str(tmp_path / "store")

    assert _backed_up(volsafe("backup", "--label", f"vstest.sel={tag}", "--to", store, "--json")) == {db, cache}
    assert _backed_up(volsafe("backup", "--label", f"vstest.sel={tag}", "--label", "tier=cache", "--to", store, "--json")) == {cache}
    assert _backed_up(volsafe("backup", "--project", project, "--to", store, "--json")) == {db, cache}
    assert _backed_up(volsafe("backup", "--project", project, "--exclude", cache, "--to", store, "--json")) == {db}
    assert _backed_up(volsafe("backup", "--project", project, "--project", other_project, "--exclude", "*-cache-*", "--to", store, "--json")) == {db, blog}
    none = volsafe("backup", "--project", f"nothing{tag}", "--to", store)
    assert none.code == 2 and "no volume matches" in none.err

    # The same selection from a job's config.
    config = tmp_path / "volsafe.toml"
    config.write_text(
        f'[backends.here]\ntype = "local"\npath = "{store}-job"\n'
        f'[jobs.sel]\nprojects = ["{project}", "{other_project}"]\nexclude_volumes = ["{blog}"]\nschedule = "@daily"\nbackends = ["here"]\n'
    )
    config.chmod(0o600)
    ran = volsafe("--config", str(config), "jobs", "run", "sel", "--json")
    assert ran.code == 0, ran.err
    assert sorted(json.loads(ran.out)["volumes"]) == sorted([db, cache])


def test_path_excludes_keep_excluded_files_out(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume = volumes("excl")
    docker_host.api.create_volume(volume)
    run_in_volume(
        docker_host, helper_image, volume,
        "mkdir -p /v/cache/deep /v/app/logs /v/app/cache-not && echo a > /v/cache/deep/x && echo keep > /v/app/main "
        "&& echo l > /v/app/logs/a.log && echo k > /v/app/logs/keep.txt && echo n > /v/app/cache-not/f "
        "&& head -c 100000 /dev/urandom > /v/big && ln /v/cache/deep/x /v/zz-link",
    )
    store = str(tmp_path / "store")
    done = volsafe("backup", volume, "--exclude", "/cache", "--exclude", "**/*.log", "--to", store, "--json")
    assert done.code == 0, done.err
    copy = volumes("excl-copy")
    assert volsafe("restore", volume, "--from", store, "--to-volume", copy).code == 0
    tree, _ = snapshot(docker_host, helper_image, copy)
    # zz-link comes after the excluded cache/deep/x in Docker's tar, as a hard link to it: it goes too.
    kept = {".", "app", "app/main", "app/logs", "app/logs/keep.txt", "app/cache-not", "app/cache-not/f", "big"}
    assert set(tree) == kept
    assert "1 hard link" in done.err
    original, _ = snapshot(docker_host, helper_image, volume)
    assert tree["big"] == original["big"] and "zz-link" in original
    # Verified like any backup: the manifest's entry count and digest describe the filtered archive.
    assert volsafe("verify", volume, "--from", store).code == 0

    # A job's exclude key does the same.
    config = tmp_path / "volsafe.toml"
    config.write_text(
        f'[backends.here]\ntype = "local"\npath = "{store}-job"\n'
        f'[jobs.ex]\nvolumes = ["{volume}"]\nexclude = ["cache", "*.log"]\nschedule = "@daily"\nbackends = ["here"]\n'
    )
    config.chmod(0o600)
    assert volsafe("--config", str(config), "jobs", "run", "ex").code == 0
    job_copy = volumes("excl-job")
    assert volsafe("restore", volume, "--from", f"{store}-job", "--to-volume", job_copy).code == 0
    tree, _ = snapshot(docker_host, helper_image, job_copy)
    # "cache" without '/' matches any name: /cache goes; "cache-not" does not match it.
    assert set(tree) == kept


def test_overview_matches_reality_and_updates_after_a_backup(app, docker_host, volumes, volsafe, tmp_path):
    store = str(tmp_path / "store")
    idle = volumes("idle")
    docker_host.api.create_volume(idle, labels={"com.docker.compose.project": "vstestproj"})

    def overview() -> dict:
        result = volsafe("volumes", "--from", store, "--json")
        assert result.code == 0, result.err
        return {row["volume"]: row for row in json.loads(result.out)}

    rows = overview()
    row = rows[app["volume"]]
    assert row["containers"] == [{"name": app["name"], "running": True}]
    assert row["stale"] is True and row["newest_created"] is None and row["backups"][0]["newest_id"] is None
    assert row["size"] is not None and row["size"] >= len("rows\n")
    assert rows[idle]["project"] == "vstestproj" and rows[idle]["containers"] == []

    done = volsafe("backup", app["volume"], "--to", store, "--json")
    assert done.code == 0, done.err
    backup_id = json.loads(done.out)[0]["id"]
    docker_host.api.stop(app["name"], timeout=1)
    rows = overview()
    row = rows[app["volume"]]
    assert row["backups"][0]["newest_id"] == backup_id
    assert row["stale"] is False and 0 <= row["age_seconds"] < 120
    assert row["containers"] == [{"name": app["name"], "running": False}]
    assert rows[idle]["stale"] is True
    table = volsafe("volumes", "--from", store, "--max-age", "1h")
    lines = {line.split()[0]: line for line in table.out.splitlines()[1:]}
    assert lines[app["volume"]].endswith("ago") and "(stopped)" in lines[app["volume"]]
    assert lines[idle].endswith("never  !")
