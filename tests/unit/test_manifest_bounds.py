"""One malformed manifest or config never takes the rest down: sizes and nesting are bounded, a bad
manifest is skipped with one warning naming its key, a bad config is a clear config error (exit 2)."""

from __future__ import annotations

import json
import logging
import tarfile

import pytest

from backup.archive.catalog import list_backups, load_manifest, resolve_ref
from backup.config.schema import ConfigError, parse_config
from backup.errors import ManifestError
from backup.archive.manifest import MAX_MANIFEST_SIZE, parse_manifest
from backup.archive.naming import BackupId, Ref, new_stamp
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup

DEEP_JSON = b"[" * 100_000


@pytest.fixture
def store(tmp_path):
    """Two good backups of db and one of web, plus a newer manifest of db that is 100,000 ``[``."""
    backend = LocalBackend(tmp_path / "store")
    first = store_backup(backend, "db", make_tar(SAMPLE), stamp_token="0001")
    second = store_backup(backend, "db", make_tar(SAMPLE + [("./more", tarfile.REGTYPE, b"x" * 5000)]), stamp_token="0002")
    web = store_backup(backend, "web", make_tar(SAMPLE), stamp_token="0003")
    bad = BackupId("db", new_stamp(second.created.replace(year=second.created.year + 1), "bad0"))
    backend.save(bad.manifest_key, [DEEP_JSON])
    return backend, first, second, web, bad


@pytest.mark.parametrize(
    "raw, message",
    [
        (DEEP_JSON, "nests arrays or objects more than"),
        (b'{"format": "volsafe-manifest", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests arrays or objects more than"),
        (b'{"format": "volsafe-manifest", "x": "' + b"[" * 5000 + b'"}', "lacks field 'format_version'"),  # brackets in a string are fine
        (b'{"a": "\\"' + b"{" * 100 + b'"}', "not a volsafe manifest"),  # so are they after an escaped quote
        (b" " * (MAX_MANIFEST_SIZE + 1), "larger than"),
        ("[" * 100_000, "nests arrays or objects more than"),  # str as well as bytes
    ],
    ids=["100k-brackets", "deep-extra-field", "brackets-in-string", "escaped-quote", "too-large", "str"],
)
def test_parse_manifest_is_bounded(raw, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def test_load_manifest_reads_at_most_the_limit(store):
    backend, *_ = store
    huge = BackupId("db", new_stamp(store[1].created, "huge"))
    backend.save(huge.manifest_key, [b" " * (8 * MAX_MANIFEST_SIZE)])
    reads = []
    real_open = backend.open

    def counting_open(key, offset=0):
        return _Proxy(real_open(key, offset), reads)

    backend.open = counting_open
    with pytest.raises(ManifestError, match="larger than"):
        load_manifest(backend, huge)
    assert reads and all(0 <= n <= MAX_MANIFEST_SIZE + 1 for n in reads)


class _Proxy:
    def __init__(self, stream, reads):
        self.stream, self.reads = stream, reads

    def read(self, n=-1):
        self.reads.append(n)
        return self.stream.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


def test_a_deep_manifest_is_skipped_with_one_warning_naming_its_key(store, caplog):
    backend, first, second, web, bad = store
    with caplog.at_level(logging.WARNING):
        found = list_backups(backend)
    assert [str(m.backup_id) for m in found] == [str(first.backup_id), str(second.backup_id), str(web.backup_id)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and bad.manifest_key in warnings[0].getMessage()


def test_restore_of_the_newest_resolves_past_a_deep_manifest(store):
    # What ``restore db`` (and ``verify db``) resolve: the newest backup whose manifest reads.
    backend, first, second, web, bad = store
    assert resolve_ref(backend, Ref("db", None)).backup_id == second.backup_id
    with pytest.raises(ManifestError, match="nests"):
        resolve_ref(backend, Ref("db", bad))  # asked for by its exact id: one clear error


def test_list_prune_verify_work_past_a_deep_manifest(store, run, monkeypatch):
    monkeypatch.setenv("VOLSAFE_HOST_NAME", "test")  # the host store_backup records: prune touches its backups
    backend, first, second, web, bad = store
    root = str(backend.root)
    code, out, err = run("list", "--from", root, "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(first.backup_id), str(second.backup_id), str(web.backup_id)]
    assert bad.manifest_key in err and "unexpected" not in err

    code, out, err = run("verify", "--all", "--from", root, "--json")
    assert "unexpected" not in err
    verdicts = {r["id"]: r for r in json.loads(out)}
    assert code == 1 and not verdicts[str(bad)]["ok"] and "nests" in verdicts[str(bad)]["error"]
    assert all(verdicts[str(m.backup_id)]["ok"] for m in (first, second, web))

    code, out, err = run("verify", "db", "--from", root, "--json")  # the newest good one
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [str(second.backup_id)]

    code, out, err = run("prune", "--from", root, "--keep-last", "1", "--json")
    assert code == 0, err and "unexpected" not in err
    actions = {r["id"]: r["action"] for r in json.loads(out)}
    assert actions == {str(second.backup_id): "keep", str(first.backup_id): "removed", str(web.backup_id): "keep"}
    assert (backend.root / bad.manifest_key).read_bytes() == DEEP_JSON  # not listed, so not touched


# -- config files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 100_000,  # tomllib recurses
        "a = " + "{b = " * 100_000,
        "[" + ".".join(["t"] * 5000) + "]\nx = 1\n",  # headers nest without recursion; the checks would not
        ".".join(["k"] * 5000) + " = 1\n",
    ],
    ids=["arrays", "inline-tables", "dotted-header", "dotted-key"],
)
def test_a_deeply_nested_config_is_a_config_error(text, tmp_path):
    with pytest.raises(ConfigError, match="nest more than"):
        parse_config(text, tmp_path / "v.toml")


def test_config_check_names_the_file_and_exits_2(tmp_path, run):
    deep, large = tmp_path / "deep.toml", tmp_path / "large.toml"
    deep.write_text("x = " + "[" * 100_000)
    large.write_text("# padding\n" * 200_000)
    for path, message in ((deep, "nest more than"), (large, "larger than")):
        code, out, err = run("config", "check", "--config", str(path))
        assert code == 2, err
        assert err.startswith(f"volsafe: error: invalid config {path}") and message in err
        assert "unexpected" not in err and "Recursion" not in err
