"""The backend registry: each backend module declares its settings, constructor and URL schemes
once, and config validation, locations and the CLI read them from there. A new backend is one module
that registers itself; this test registers one (``mem``) and uses it everywhere."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Iterator

import pytest

from backup.config.locations import open_locations
from backup.config.schema import SCHEMA, ConfigError, JobConfig, key_named, keys_of, parse_config
from storage_backends.base import Backend, ObjectInfo, PermanentError
from storage_backends.registry import BackendType, backend_type, open_backend, register, type_names, unregister
from storage_backends.retry import RetryingBackend
from storage_backends.settings import TEXT, Setting, WholeNumber


class MemoryBackend(Backend):
    """Objects in a dict: enough of a backend to be opened, listed and named."""

    def __init__(self, space: str, slots: int = 8, token: str | None = None):
        self.url, self.slots, self.token, self.objects = f"mem://{space}", slots, token, {}

    def save(self, key, chunks):
        self.objects[key] = b"".join(chunks)
        return len(self.objects[key])

    def open(self, key, offset=0):
        raise NotImplementedError

    def stat(self, key):
        return ObjectInfo(key, len(self.objects[key]))

    def list(self, prefix=""):
        return (ObjectInfo(k, len(v)) for k, v in self.objects.items() if k.startswith(prefix))

    def remove(self, key):
        del self.objects[key]


def _check(settings) -> Iterator[str]:
    if settings.get("slots", 0) > 4 and not settings.get("token"):
        yield "more than 4 slots need a token"


MEM = BackendType(
    "mem",
    settings=(
        Setting("space", TEXT, "name of the memory space", required=True),
        Setting("slots", WholeNumber(1, 16), "slots (1 to 16)", 8),
        Setting("token", TEXT, "access token", secret=True),
    ),
    create=lambda settings: MemoryBackend(**settings),
    schemes=("mem",),
    from_url=lambda url: MemoryBackend(url.partition("://")[2]),
    check=_check,
)


@pytest.fixture
def mem():
    register(MEM)
    yield MEM
    unregister("mem")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "v.toml", environ={})
    return str(info.value).splitlines()[1:]


def test_a_registered_type_is_a_config_type_with_its_settings_checked(mem, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("t0k\n")
    config = parse_config(f'[backends.m]\ntype = "mem"\nspace = "s"\nslots = 5\ntoken_file = "{secret}"\n', environ={})
    assert config.backends["m"].type == "mem"
    assert config.backends["m"].settings == {"space": "s", "slots": 5, "token": "t0k"}
    assert type_names() == ["local", "s3", "restic", "mem"]
    assert errors_of('[backends.m]\ntype = "mem"\nspace = "s"\nslots = 17\npath = "/x"\n') == [
        "  v.toml:4: backends.m.slots: must be at most 16, not 17",
        "  v.toml:5: backends.m.path: does not apply to this backend type (it is for type local)",
    ]
    assert errors_of('[backends.m]\ntype = "mem"\n') == ["  v.toml:1: backends.m: missing required key 'space' (name of the memory space)"]
    assert errors_of('[backends.m]\ntype = "mem"\nspace = "s"\nslots = 5\n') == ["  v.toml:1: backends.m: more than 4 slots need a token"]
    assert errors_of('[backends.b]\ntype = "local"\npath = "/x"\nslots = 1\n') == [
        "  v.toml:4: backends.b.slots: does not apply to this backend type (it is for type mem)"
    ]
    assert errors_of('[backends.b]\ntype = "nem"\n') == [
        "  v.toml:2: backends.b.type: must be one of local, s3, restic, mem, not 'nem' (did you mean 'mem'?)"
    ]


def test_a_registered_type_opens_by_name_and_by_url(mem):
    config = parse_config('[backends.m]\ntype = "mem"\nspace = "a"\nslots = 2\n', environ={})
    by_name, by_url = open_locations(["m", "mem://b"], config.backends)
    assert isinstance(by_name, RetryingBackend) and isinstance(by_name.inner, MemoryBackend)
    assert (by_name.url, by_name.inner.slots, by_url.url) == ("mem://a", 2, "mem://b")
    assert [b.url for b in open_locations(None, config.backends)] == ["mem://a"]  # the config's backends


def test_unknown_scheme_lists_the_registered_ones(mem):
    with pytest.raises(PermanentError, match=r"ftp://x: unknown backend scheme 'ftp' \(use a path, file://, s3:// or mem://\)"):
        open_backend("ftp://x")


def test_builtin_types_declare_their_settings_and_schemes():
    local, s3 = backend_type("local"), backend_type("s3")
    assert [s.name for s in local.settings] == ["path"] and local.schemes == ("file",) and local.paths
    assert s3.schemes == ("s3",) and {s.name for s in s3.settings if s.secret} == {"access_key_id", "secret_access_key", "session_token"}
    assert [k.name for k in SCHEMA["backends"]] == ["type"]  # the rest of a [backends.NAME] table is its type's


def test_each_key_default_is_declared_once():
    assert JobConfig(name="j", schedule="@daily").hook_timeout == key_named("jobs", "hook_timeout").default == 300.0
    assert [k.name for k in keys_of(JobConfig)] == [k.name for k in SCHEMA["jobs"]]
    assert {k.name: k.default for k in SCHEMA["scheduler"]} == {"misfire_grace_time": 3600.0, "stop_timeout": 60.0}
    level = key_named("jobs", "compression_level")
    assert (level.default, level.convert.minimum, level.convert.maximum) == (3, 1, 22)


def test_the_cli_bounds_are_the_config_keys(run):
    # (How click's range errors read, and their exit code, is the CLI error handling's business.)
    code, _, err = run("backup", "v", "--concurrency", "33", "--to", "/nowhere")
    assert code != 0 and re.search(r"less than or equal to 32|1<=x<=32", err), err
    code, _, err = run("backup", "v", "--level", "23", "--to", "/nowhere")
    assert code != 0 and re.search(r"less than or equal to 22|1<=x<=22", err), err


def test_only_the_backends_used_are_imported(tmp_path):
    """botocore (~0.2 s to import) loads only for an s3 backend or URL."""
    code = (
        "import sys\n"
        "from backup.config.schema import parse_config\n"
        "from backup.config.locations import open_locations\n"
        f"c = parse_config('[backends.n]\\ntype = \"local\"\\npath = \"{tmp_path}\"\\n', environ={{}})\n"
        f"open_locations(['n', '{tmp_path}/x', 'file://{tmp_path}/y'], c.backends)\n"
        "print('botocore' in sys.modules, 'storage_backends.s3' in sys.modules)\n"
        "open_locations(['s3://bucket/p'], c.backends)\n"
        "print('storage_backends.s3' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]
