"""Where every command looks for backups: --from/--to, else the config's backends, else the default
directory; a bare word is a backend name, never a directory; a broken config stops every command."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backup.archive.catalog import locate
from backup.archive.naming import parse_ref
from backup.config.locations import default_location, open_locations
from backup.config.schema import parse_config
from backup.errors import NotFoundError, UsageError
from backup.jobs.scheduler import job_backends
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No config file but the test's own; the default directory inside tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("VOLSAFE_CONFIG", raising=False)


def two_stores(tmp_path) -> Path:
    """Write volsafe.toml (found in the working directory) with backends nas and usb; return it."""
    config = tmp_path / "volsafe.toml"
    config.write_text(
        f'[backends.nas]\ntype = "local"\npath = "{tmp_path}/nas"\n\n[backends.usb]\ntype = "local"\npath = "{tmp_path}/usb"\n'
    )
    return config


# -- the rule --------------------------------------------------------------------------------


def test_without_locations_every_configured_backend_in_file_order_else_the_default(tmp_path):
    config = parse_config(two_stores(tmp_path).read_text(), environ={})
    assert [b.url for b in open_locations(None, config.backends)] == [(tmp_path / "nas").as_uri(), (tmp_path / "usb").as_uri()]
    assert [b.url for b in open_locations([], {})] == [Path(default_location()).as_uri()]
    assert default_location() == str(tmp_path / "xdg-data" / "volsafe" / "backups")


def test_two_tables_naming_one_place_are_used_once(tmp_path):
    config = parse_config(
        f'[backends.a]\ntype = "local"\npath = "{tmp_path}/x"\n[backends.b]\ntype = "local"\npath = "{tmp_path}/x/"\n', environ={}
    )
    assert [b.url for b in open_locations(None, config.backends)] == [(tmp_path / "x").as_uri()]
    with pytest.raises(UsageError, match="the same backend is named twice"):
        open_locations(["a", "b"], config.backends)


def test_a_job_without_backends_still_writes_to_the_default_directory(tmp_path):
    text = two_stores(tmp_path).read_text() + '[jobs.j]\nvolumes = ["v"]\nschedule = "@daily"\n'
    config = parse_config(text, environ={})
    assert [b.url for b in job_backends(config, config.jobs["j"])] == [Path(default_location()).as_uri()]


def test_bare_words_are_backend_names_paths_and_urls_are_not(tmp_path):
    config = parse_config(two_stores(tmp_path).read_text(), environ={})
    nas, here, there, url = open_locations(["nas", "./tape", "tape/sub", f"file://{tmp_path}/u"], config.backends)
    assert nas.url == (tmp_path / "nas").as_uri()
    assert here.url == (tmp_path / "tape").as_uri()
    assert there.url == (tmp_path / "tape" / "sub").as_uri()
    assert url.url == (tmp_path / "u").as_uri()
    assert [b.url for b in open_locations(["."], {})] == [tmp_path.as_uri()]


@pytest.mark.parametrize(
    "word, named, hint",
    [
        ("nsa", True, "; did you mean 'nas'?"),
        ("tape", True, "; configured: nas, usb"),
        ("nsa", False, "; no [backends] are configured"),
    ],
)
def test_a_bare_word_that_names_no_backend_is_refused(tmp_path, word, named, hint):
    config = parse_config(two_stores(tmp_path).read_text() if named else "", environ={})
    with pytest.raises(UsageError) as info:
        open_locations([word], config.backends)
    assert str(info.value) == f"no backend named {word!r} (use ./{word} for a directory){hint}"
    assert info.value.exit_code == 2
    assert not (tmp_path / word).exists()


def test_backup_to_a_mistyped_name_writes_nothing(run, tmp_path):
    two_stores(tmp_path)
    code, out, err = run("backup", "somevolume", "--to", "nsa")
    assert code == 2 and out == ""
    assert err == "volsafe: error: no backend named 'nsa' (use ./nsa for a directory); did you mean 'nas'?\n"
    assert not (tmp_path / "nsa").exists()
    for command in (["list"], ["verify", "--all"], ["prune", "--keep-last", "1"], ["restore", "v"], ["volumes"]):
        code, _, err = run(*command, "--from", "nsa")
        assert code == 2 and "no backend named 'nsa'" in err, (command, err)
    code, _, err = run("migrate", "v", "--to-host", "unix:///nowhere", "--via", "nsa")
    assert code == 2 and "no backend named 'nsa'" in err, err


# -- every reading command uses the rule -------------------------------------------------------


@pytest.fixture
def stored(tmp_path):
    """volsafe.toml with nas and usb; an older backup of db on nas, a newer one on usb, web on nas."""
    two_stores(tmp_path)
    earlier = datetime.now(timezone.utc) - timedelta(minutes=1)  # ids carry the time to the second
    older = store_backup(LocalBackend(tmp_path / "nas"), "db", make_tar(SAMPLE), stamp_token="0001", created=earlier)
    web = store_backup(LocalBackend(tmp_path / "nas"), "web", make_tar(SAMPLE), stamp_token="0002", created=earlier)
    newer = store_backup(LocalBackend(tmp_path / "usb"), "db", make_tar(SAMPLE), stamp_token="0003")
    return older, web, newer


def test_list_verify_and_prune_read_the_configured_backends(run, tmp_path, stored, monkeypatch):
    monkeypatch.setenv("VOLSAFE_HOST_NAME", "test")  # the host store_backup records: prune touches its backups
    older, web, newer = stored
    code, out, err = run("list", "--json")
    assert code == 0, err
    assert [(r["id"], r["backend"]) for r in json.loads(out)] == [
        (str(older.backup_id), (tmp_path / "nas").as_uri()),
        (str(web.backup_id), (tmp_path / "nas").as_uri()),
        (str(newer.backup_id), (tmp_path / "usb").as_uri()),
    ]
    code, out, err = run("verify", "--all", "--json")
    assert code == 0, err
    assert sorted(r["id"] for r in json.loads(out) if r["ok"]) == sorted(str(m.backup_id) for m in stored)
    code, out, err = run("prune", "db", "--keep-last", "1", "--dry-run", "--json")
    assert code == 0, err
    assert sorted((r["id"], r["action"]) for r in json.loads(out)) == sorted(
        [(str(older.backup_id), "keep"), (str(newer.backup_id), "keep")]  # one per backend: each is its newest
    )
    # --from still wins, and the default directory is used only without a config.
    code, out, err = run("list", "--from", "usb", "--json")
    assert [r["id"] for r in json.loads(out)] == [str(newer.backup_id)]
    (tmp_path / "volsafe.toml").unlink()
    code, out, err = run("list", "--json")
    assert code == 0 and json.loads(out) == [], err


def test_restore_finds_the_newest_backup_across_the_configured_backends(tmp_path, stored):
    older, web, newer = stored
    config = parse_config((tmp_path / "volsafe.toml").read_text(), environ={})
    backends = open_locations(None, config.backends)
    backend, ref = locate(backends, parse_ref("db"))
    assert backend.url == (tmp_path / "usb").as_uri() and ref.backup_id == newer.backup_id
    backend, ref = locate(backends, parse_ref(str(older.backup_id)))
    assert backend.url == (tmp_path / "nas").as_uri() and ref.backup_id == older.backup_id
    backend, ref = locate(backends, parse_ref("web@latest"))
    assert backend.url == (tmp_path / "nas").as_uri() and ref.backup_id == web.backup_id
    with pytest.raises(NotFoundError, match=r"no backups of volume 'cache' in file://.*/nas, file://.*/usb"):
        locate(backends, parse_ref("cache"))
    only = backends[:1]
    assert locate(only, parse_ref("cache")) == (only[0], parse_ref("cache"))  # one backend: nothing read


# -- a broken config stops every command -------------------------------------------------------

BROKEN = '[backends.nas]\ntype = "lokal"\npath = "/srv"\n'


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--from", "/tmp"],
        ["verify", "--all", "--from", "/tmp"],
        ["prune", "--keep-last", "1", "--from", "/tmp"],
        ["restore", "v", "--from", "/tmp"],
        ["volumes"],
        ["backup", "v", "--to", "/tmp"],
        ["migrate", "v", "--to-host", "unix:///nowhere"],
        ["helper-image", "build"],
        ["jobs", "list"],
        ["config", "check"],
        ["run"],
    ],
)
@pytest.mark.parametrize("how", ["--config", "found"])
def test_a_broken_config_is_exit_2_before_anything_else(run, tmp_path, command, how):
    (tmp_path / ("broken.toml" if how == "--config" else "volsafe.toml")).write_text(BROKEN)
    args = ["--config", "broken.toml", *command] if how == "--config" else command
    code, out, err = run(*args)
    assert code == 2 and out == "", err
    assert err.startswith("volsafe: error: invalid config ") and "backends.nas.type: must be one of local, s3, restic, not 'lokal'" in err


def test_help_and_a_subcommands_own_config_need_no_valid_found_config(run, tmp_path):
    (tmp_path / "volsafe.toml").write_text(BROKEN)
    code, out, _ = run("list", "--help")
    assert code == 0 and "--from" in out
    good = tmp_path / "good.toml"
    good.write_text("")
    code, _, err = run("config", "check", "--config", str(good))
    assert code == 0 and "is valid" in err, err


# -- end to end: what backup writes without --to, restore finds without --from -----------------


@pytest.mark.docker
def test_backup_and_restore_without_locations_use_the_configured_backends(docker_host, helper_image, volumes, volsafe, tmp_path):
    from tests.support.volume_tree import run_in_volume, snapshot

    two_stores(tmp_path)
    volume = volumes()
    run_in_volume(docker_host, helper_image, volume, "echo data > /v/file")
    result = volsafe("backup", volume)
    assert result.code == 0, result.err
    nas, usb = (tmp_path / "nas").as_uri(), (tmp_path / "usb").as_uri()
    assert f"volsafe: backing up to the configured backends {nas}, {usb}" in result.err
    listed = json.loads(volsafe("list", volume, "--json").out)
    assert sorted(r["backend"] for r in listed) == [nas, usb]
    restored = volumes()
    result = volsafe("restore", volume, "--to-volume", restored)
    assert result.code == 0, result.err
    assert snapshot(docker_host, helper_image, restored) == snapshot(docker_host, helper_image, volume)
    assert not (tmp_path / "xdg-data").exists()  # the default directory was never used
