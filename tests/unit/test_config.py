"""The config file: discovery, the example, and the messages a user sees for a broken config."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from backup.cli import main as cli_main
from backup.config.schema import SCHEMA, ConfigError, JobConfig, find_config, key_values, keys_of, load_config, parse_config
from backup.config.locations import open_locations
from backup.errors import UsageError
from backup.jobs.retention import RULE_NAMES, Policy
from storage_backends.registry import backend_types

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def errors_of(text: str, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "volsafe.toml", environ={} if environ is None else environ)
    return str(info.value).splitlines()


def test_example_validates_without_any_environment():
    config = parse_config(EXAMPLE.read_text(), EXAMPLE, environ={})
    assert set(config.jobs) == {"databases", "scratch"}
    assert config.jobs["databases"].retention == Policy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=2)
    assert config.backends["offsite"].settings["bucket"] == "my-backups"


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}" in text, section
        for key in keys:
            assert f"{key.name} =" in text or f"{key.name}_file =" in text, f"{section}.{key.name} is not in the example"
    for rule in RULE_NAMES:
        assert rule in text
    # [backends.NAME]: a table of each registered type, with every setting that type declares.
    tables = tomllib.loads(text)["backends"]
    for kind in backend_types():
        assert any(t["type"] == kind.name for t in tables.values()), f"no [backends.*] table of type {kind.name}"
        start = text.index(f'type = "{kind.name}"')
        section = text[start : text.find("\n[", start)]
        for setting in kind.settings:
            assert f"{setting.name} =" in section or f"{setting.name}_file =" in section, f"{kind.name}: {setting.name} is not in the example"


def test_syntax_error_names_its_line():
    (head, line) = errors_of('[jobs.web]\nvolumes = ["a"\nschedule = "@daily"\n')
    assert head == "invalid config volsafe.toml:"
    assert line.strip().startswith("volsafe.toml:3:") and "TOML syntax error" in line


BROKEN = """\
[docker]
hots = "unix:///var/run/docker.sock"

[backends.nas]
type = "local"
path = "/srv/backups"

[jobs.web]
volumes = ["web"]
schedule = "61 * * * *"
backends = ["nass"]
retention = { keep_last = 2, keep_dayly = 7 }

[jobs.db]
volume = ["db"]
schedule = "@daily"
stop_containers = "yes"
"""


def test_every_error_at_once_with_line_job_and_hint():
    lines = errors_of(BROKEN)
    assert lines[0] == "invalid config volsafe.toml (7 errors):"
    assert lines[1:] == [
        "  volsafe.toml:2: docker.hots: unknown key (did you mean 'host'?)",
        "  volsafe.toml:10: jobs.web.schedule: bad crontab schedule '61 * * * *': "
        "Error validating expression '61': the last value (61) is higher than the maximum value (59)",
        "  volsafe.toml:11: jobs.web.backends: unknown backend 'nass' (did you mean 'nas'?)",
        "  volsafe.toml:12: jobs.web.retention.keep_dayly: unknown retention rule (did you mean 'keep_daily'?)",
        "  volsafe.toml:14: jobs.db: give volumes, volume_labels, projects or all_volumes: the job has nothing to back up",
        "  volsafe.toml:15: jobs.db.volume: unknown key (did you mean 'volumes'?)",
        "  volsafe.toml:17: jobs.db.stop_containers: must be true or false, not a string",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[jobz.x]\n", "jobz: unknown table (did you mean 'jobs'?)"),
        ('[backends.b]\ntype = "ftp"\n', "backends.b.type: must be one of local, s3, restic, not 'ftp'"),
        ('[backends.b]\ntype = "local"\n', "backends.b: missing required key 'path'"),
        ('[backends.b]\ntype = "s3"\n', "backends.b: missing required key 'bucket'"),
        ('[backends.b]\ntype = "local"\npath = "/x"\nbucket = "y"\n', "backends.b.bucket: does not apply to this backend type (it is for type s3)"),
        ('[backends.b]\ntype = "s3"\nbucket = "y"\naccess_key_id = "k"\n', "give both access_key_id and secret_access_key"),
        ('[jobs.j]\nvolumes = ["a"]\n', "jobs.j: missing required key 'schedule'"),
        ('[jobs.j]\nvolumes = ["a"]\nschedule = "@every 6 hours"\n', "jobs.j.schedule: not a duration"),
        ('[jobs.j]\nvolumes = ["a b"]\nschedule = "@daily"\n', "jobs.j.volumes: invalid volume name 'a b'"),
        ('[jobs.j]\nvolumes = ["a"]\nschedule = "@daily"\ntimezone = "Mars/X"\n', "jobs.j.timezone: unknown time zone 'Mars/X'"),
        ('[jobs.j]\nvolumes = ["a"]\nschedule = "@daily"\nretention = { keep_last = -1 }\n', "jobs.j.retention.keep_last: must be a whole number >= 0"),
        ('[jobs.j]\nvolumes = ["a"]\nschedule = "@daily"\nbackends = ["x"]\n', "unknown backend 'x' (no [backends.*] tables are defined)"),
        ('[health]\nlisten = "9180"\n', "health.listen: must be HOST:PORT"),
        ('[scheduler]\nstop_timeout = "soon"\n', "scheduler.stop_timeout: not a duration"),
    ],
)
def test_single_errors(text, message):
    lines = errors_of(text)
    assert any(message in line for line in lines[1:]), lines


def test_env_references_and_secret_files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    text = f"""
[backends.b]
type = "s3"
bucket = "${{BUCKET}}-backups"
access_key_id = "${{KEY_ID}}"
secret_access_key_file = "{secret}"
"""
    config = parse_config(text, "v.toml", environ={"BUCKET": "prod", "KEY_ID": "AKIA1"})
    # The settings the backend is built from: those given, and the declared defaults of the others.
    assert config.backends["b"].settings == {
        "bucket": "prod-backups", "prefix": "", "access_key_id": "AKIA1", "secret_access_key": "s3cr3t",
        "path_style": False, "part_size": 16 * 1024 * 1024, "concurrency": 4,
    }
    lines = errors_of(text, environ={"BUCKET": "prod"})
    assert any("backends.b.access_key_id: environment variable KEY_ID is not set" in line for line in lines)


def test_secret_file_problems(tmp_path):
    lines = errors_of(f'[health]\nwebhook_url = "http://x"\nwebhook_url_file = "{tmp_path}/nope"\n')
    assert any("give webhook_url or webhook_url_file, not both" in line for line in lines)
    lines = errors_of(f'[health]\nwebhook_url_file = "{tmp_path}/nope"\n')
    assert any("cannot read secret file" in line and "No such file" in line for line in lines)
    lines = errors_of('[backends.b]\ntype = "local"\npath_file = "/x"\n')
    assert any("backends.b.path_file: unknown key" in line for line in lines)


def test_discovery_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VOLSAFE_CONFIG", raising=False)
    assert find_config(None) is None and load_config().jobs == {}
    home = tmp_path / "xdg" / "volsafe" / "config.toml"
    home.parent.mkdir(parents=True)
    home.write_text("")
    assert find_config(None) == home
    (tmp_path / "volsafe.toml").write_text("")
    assert find_config(None) == Path("volsafe.toml")
    env_file = tmp_path / "env.toml"
    env_file.write_text("")
    monkeypatch.setenv("VOLSAFE_CONFIG", str(env_file))
    assert find_config(None) == env_file
    option = tmp_path / "opt.toml"
    option.write_text("")
    assert find_config(str(option)) == option
    with pytest.raises(ConfigError, match=r"config file .*missing.toml \(from --config\) does not exist"):
        find_config(str(tmp_path / "missing.toml"))


def test_system_config_is_found_last(tmp_path, monkeypatch):
    """/etc/volsafe/volsafe.toml (the container image's and the systemd unit's place) is used when
    no other config is there, and loses to the per-user one."""
    from backup.config import files

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VOLSAFE_CONFIG", raising=False)
    system = tmp_path / "etc" / "volsafe.toml"
    monkeypatch.setattr(files, "SYSTEM_CONFIG", str(system))
    assert find_config(None) is None
    system.parent.mkdir()
    system.write_text('[jobs.nightly]\nvolumes = ["db"]\nschedule = "@daily"\n')
    assert find_config(None) == system and list(load_config().jobs) == ["nightly"]
    home = tmp_path / "xdg" / "volsafe" / "config.toml"
    home.parent.mkdir(parents=True)
    home.write_text("")
    assert find_config(None) == home


def test_named_backends_resolve_and_paths_stay_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config(
        f'[backends.nas]\ntype = "local"\npath = "{tmp_path}/nas"\n'
        '[backends.cloud]\ntype = "s3"\nbucket = "bkt"\nprefix = "p/q"\nregion = "eu-west-1"\nendpoint_url = "http://127.0.0.1:1"\n'
        'access_key_id = "a"\nsecret_access_key = "b"\n',
        environ={},
    )
    nas, cloud, other = open_locations(["nas", "cloud", "./elsewhere"], config.backends)
    assert nas.url == (tmp_path / "nas").as_uri()
    assert cloud.url == "s3://bkt/p/q"
    assert other.url == (tmp_path / "elsewhere").as_uri()
    with pytest.raises(UsageError, match=r"^no backend named 'elsewhere' \(use ./elsewhere for a directory\)"):
        open_locations(["elsewhere"], config.backends)


def cli(capsys, *args):
    capsys.readouterr()
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_config_check_cli(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(BROKEN)
    code, out, err = cli(capsys, "config", "check", "--config", str(bad))
    assert code == 2 and out == ""
    assert err.startswith(f"volsafe: error: invalid config {bad} (7 errors):\n")
    assert f"  {bad}:11: jobs.web.backends: unknown backend 'nass' (did you mean 'nas'?)" in err.splitlines()

    code, out, err = cli(capsys, "--config", str(EXAMPLE), "config", "check")
    assert code == 0, err
    assert "is valid: 3 backend(s), 2 job(s)" in err
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["JOB", "SCHEDULE", "NEXT", "RUN"]
    assert rows[0].startswith("databases") and "T02:30:00+01:00" in rows[0]  # Europe/Berlin in winter
    assert rows[1].startswith("scratch") and "@every 6h" in rows[1]


def test_named_backend_through_the_cli(tmp_path, capsys):
    config = tmp_path / "v.toml"
    config.write_text(f'[backends.nas]\ntype = "local"\npath = "{tmp_path}/nas"\n')
    code, out, err = cli(capsys, "--config", str(config), "list", "--from", "nas", "--json")
    assert code == 0, err
    assert out.strip() == "[]"


# Every [jobs.NAME] key set to something other than its default (stop and pause exclude each other:
# pause_containers is checked by a second job).
EVERY_JOB_KEY = """
[backends.nas]
type = "local"
path = "{root}/nas"

[jobs.all]
schedule = "@daily"
volumes = ["pgdata"]
volume_labels = {{ "com.example.backup" = "daily" }}
all_volumes = true
projects = ["shop"]
exclude_volumes = ["*-scratch"]
exclude = ["cache", "*.log"]
backends = ["nas"]
stop_containers = true
quiesce_each = true
pre_hook = "pg_dump -f /dump/db.sql"
post_hook = "rm /dump/db.sql"
hook_container = "shop-db-1"
hook_timeout = "2m"
hook_on_error = "continue"
retention = {{ keep_last = 3 }}
timezone = "Europe/Berlin"
jitter = "5m"
verify = "@weekly"
verify_restore_test = true
concurrency = 3
compression_level = 9
compression_threads = 2

[jobs.paused]
schedule = "@hourly"
volumes = ["cache"]
pause_containers = true
"""


def test_config_check_shows_every_job_key_that_is_set(tmp_path, capsys):
    path = tmp_path / "volsafe.toml"
    path.write_text(EVERY_JOB_KEY.format(root=tmp_path))
    code, out, err = cli(capsys, "--config", str(path), "config", "check", "--json")
    assert code == 0, err
    jobs = {r["job"]: r for r in json.loads(out)}
    declared = [k.name for k in keys_of(JobConfig)]
    # The config sets every key the schema declares (a new key must be added above) ...
    config = load_config(path)
    unset = [n for n, _v, default in key_values(config.jobs["all"]) if default and n != "pause_containers"]
    assert unset == [] and not key_values(config.jobs["paused"])[declared.index("pause_containers")][2]
    # ... and --json shows each one with its value.
    assert set(declared) <= set(jobs["all"]), set(declared) - set(jobs["all"])
    record = jobs["all"]
    assert record["projects"] == ["shop"] and record["exclude"] == ["cache", "*.log"] and record["verify"] == "@weekly"
    assert record["quiesce_each"] is True and record["hook_timeout"] == 120 and record["compression_threads"] == 2
    assert record["retention"] == "keep_last=3" and jobs["paused"]["pause_containers"] is True

    code, out, err = cli(capsys, "--config", str(path), "config", "check")
    assert code == 0, err
    header, first, second = out.splitlines()
    assert header.split()[-1] == "SETTINGS"
    assert "all,pgdata,project:shop,label:com.example.backup=daily" in first
    for shown in (
        "exclude_volumes=*-scratch", "exclude=cache,*.log", "stop_containers=true", "quiesce_each=true",
        'pre_hook="pg_dump -f /dump/db.sql"', "hook_container=shop-db-1", "hook_timeout=120s", "hook_on_error=continue",
        "jitter=300s", "verify=@weekly", "verify_restore_test=true", "concurrency=3", "compression_level=9",
        "compression_threads=2",
    ):
        assert f" {shown}" in first, shown
    assert second.split()[-1] == "pause_containers=true"
    # Every declared key shows up in the table of the job that sets it (by name, or in its own column).
    columns = {"schedule", "timezone", "volumes", "volume_labels", "all_volumes", "projects", "backends", "retention"}
    assert all(f" {name}=" in first for name in declared if name not in columns | {"pause_containers"})
