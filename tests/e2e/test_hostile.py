"""Hostile input: hand-made malicious tars, crafted ids and manifests. None may escape or change a target."""

from __future__ import annotations

import json
import tarfile
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from backup.archive.codec import tree_digest
from backup.errors import IntegrityError, ManifestError
from backup.archive.manifest import Manifest, parse_manifest
from backup.archive.naming import parse_backup_id
from backup.archive.tar.scanner import HostileArchiveError, TarScanner
from storage_backends.local import LocalBackend
from tests.support.archive_factory import SAMPLE, make_tar, store_backup
from tests.support.volume_tree import run_in_volume

# Every entry of the volume with owner, mode, size and mtime; not "..", which is the container's "/".
LISTING = "cd /v && ls -laR --full-time . | grep -v ' [.][.]$' | sort"

MALICIOUS = {
    "dotdot": [(".", tarfile.DIRTYPE, b""), ("./../escaped", tarfile.REGTYPE, b"pwned\n")],
    "absolute": [("/etc/volsafe-pwned", tarfile.REGTYPE, b"pwned\n")],
    "nul-in-pax-path": [("./ok", tarfile.REGTYPE, b"x", {"path": "./a\x00b"})],
    "write-through-symlink": [
        (".", tarfile.DIRTYPE, b""),
        ("./out", tarfile.SYMTYPE, "/"),
        ("./out/etc/volsafe-pwned", tarfile.REGTYPE, b"pwned\n"),
    ],
    "symlink-then-overwrite": [("./link", tarfile.SYMTYPE, "/etc/passwd"), ("./link", tarfile.REGTYPE, b"pwned\n")],
    "hardlink-outside": [("./h", tarfile.LNKTYPE, "../../etc/passwd")],
    "hardlink-absolute": [("./h", tarfile.LNKTYPE, "/etc/passwd")],
    "hardlink-through-symlink": [("./s", tarfile.SYMTYPE, "/etc"), ("./h", tarfile.LNKTYPE, "./s/passwd")],
    "long-name-dotdot": [("./" + "d/" * 60 + "../" * 70 + "x", tarfile.REGTYPE, b"pwned\n")],
}


def _scan(data: bytes, chunk: int = 4096) -> TarScanner:
    scanner = TarScanner(refuse_hostile=True)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    scanner.finish()
    return scanner


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_scanner_refuses_escaping_entries(name):
    with pytest.raises(HostileArchiveError, match="archive refused"):
        _scan(make_tar(MALICIOUS[name]))


def test_legitimate_tricky_entries_pass():
    # Absolute and dangling symlinks are fine as long as nothing is written through them.
    entries = SAMPLE + [("./dangling", tarfile.SYMTYPE, "../../nowhere"), ("./..x", tarfile.REGTYPE, b"dots in a name")]
    assert _scan(make_tar(entries)).entries == len(entries)


def test_content_digest_covers_metadata_and_data():
    base = make_tar(SAMPLE)
    digest, entries = tree_digest([base])
    assert entries == len(SAMPLE) and digest.startswith("tree-sha256:")
    assert tree_digest([base[i : i + 100] for i in range(0, len(base), 100)])[0] == digest  # any chunking
    changed_data = make_tar(SAMPLE[:2] + [("./dir/file.txt", tarfile.REGTYPE, b"hellO\n" * 100)] + SAMPLE[3:])
    changed_name = make_tar(SAMPLE[:2] + [("./dir/file.TXT", tarfile.REGTYPE, b"hello\n" * 100)] + SAMPLE[3:])
    changed_link = make_tar(SAMPLE[:3] + [("./abs-link", tarfile.SYMTYPE, "/etc/shadow")] + SAMPLE[4:])
    digests = {digest} | {tree_digest([t])[0] for t in (changed_data, changed_name, changed_link)}
    assert len(digests) == 4


def test_garbage_is_not_a_tar():
    with pytest.raises(IntegrityError):
        _scan(b"\x01" * 2048)


# -- through the CLI, against the real daemon ------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize("name", ["dotdot", "write-through-symlink", "hardlink-outside"])
def test_restore_refuses_malicious_archive_and_changes_nothing(docker_host, helper_image, volumes, volsafe, tmp_path, name):
    backend = LocalBackend(tmp_path)
    # A harmless first entry, so that tar in the helper has begun extracting when the bad one comes.
    manifest = store_backup(backend, "evil", make_tar([("./first", tarfile.REGTYPE, b"1")] + MALICIOUS[name]), stamp_token="e411")
    existing, fresh = volumes("keep"), volumes("fresh")
    docker_host.api.create_volume(existing)
    run_in_volume(docker_host, helper_image, existing, "echo original > /v/data && mkdir /v/etc")
    before = run_in_volume(docker_host, helper_image, existing, LISTING)

    forced = volsafe("restore", str(manifest.backup_id), "--from", str(tmp_path), "--to-volume", existing, "--force")
    assert forced.code == 1 and "archive refused" in forced.err
    assert run_in_volume(docker_host, helper_image, existing, LISTING) == before

    created = volsafe("restore", str(manifest.backup_id), "--from", str(tmp_path), "--to-volume", fresh)
    assert created.code == 1 and "archive refused" in created.err
    assert not docker_host.volume_exists(fresh)


@pytest.mark.docker
def test_crafted_ids_and_manifests_cannot_leave_the_backend_root(volsafe, tmp_path):
    root = tmp_path / "root"
    backend = LocalBackend(root)
    manifest = store_backup(backend, "db", make_tar(SAMPLE), stamp_token="0c0c")
    for ref in ["../db", "/etc/passwd", "db/../../x@latest", "../../etc@20261127T230405Z-1a2b", "db\x00x"]:
        for command in (["restore", ref], ["verify", ref], ["list", ref]):
            result = volsafe(*command, "--from", str(root))
            assert result.code == 2 and "invalid" in result.err, (command, result.err)
    # A manifest stored under one id that claims another (here pointing outside the root) is refused.
    path = root / manifest.backup_id.manifest_key
    data = json.loads(path.read_text())
    data["id"] = "..@20261127T230405Z-1a2b"
    data["volume"]["name"] = ".."
    data["archive"]["key"] = "../../outside.tar.zst"
    path.write_text(json.dumps(data))
    result = volsafe("verify", str(manifest.backup_id), "--from", str(root))
    assert result.code == 1 and "bad id" in result.out
    result = volsafe("restore", str(manifest.backup_id), "--from", str(root), "--to-volume", "vstest-never-created")
    assert result.code == 1 and "bad id" in result.err
    # Wrong types and truncation: one clear line each.
    path.write_text('{"format": "volsafe-manifest", "format_version": "1"')
    result = volsafe("restore", str(manifest.backup_id), "--from", str(root), "--to-volume", "vstest-never-created")
    assert result.code == 1 and "manifest is not valid JSON" in result.err and "Traceback" not in result.err


# -- secrets ------------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"


def _secret_config(tmp_path, mode: int):
    path = tmp_path / f"volsafe-{mode:o}.toml"
    path.write_text(
        f'[backends.off]\ntype = "s3"\nbucket = "b"\nendpoint_url = "http://127.0.0.1:9"\naccess_key_id = "AKIDEXAMPLE"\nsecret_access_key = "{SECRET}"\n'
        f'[jobs.j]\nvolumes = ["v"]\nschedule = "@daily"\nbackends = ["off"]\n'
    )
    path.chmod(mode)
    return path


def test_config_with_secrets_readable_by_others_warns_and_never_shows_them(tmp_path, capsys):
    from backup.cli import main as cli_main

    for mode, warned in ((0o644, True), (0o640, True), (0o600, False)):
        path = _secret_config(tmp_path, mode)
        capsys.readouterr()
        code = cli_main(["--debug", "--config", str(path), "config", "check"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert ("readable by group or others" in captured.err) is warned, (mode, captured.err)
        assert SECRET not in captured.out + captured.err
    # A failing command with --debug (traceback included) does not show it either.
    capsys.readouterr()
    code = cli_main(["--debug", "--config", str(path), "verify", "--all", "--from", "off"])
    captured = capsys.readouterr()
    assert code != 0 and SECRET not in captured.out + captured.err


def test_config_with_only_env_references_does_not_warn(tmp_path, capsys, monkeypatch):
    from backup.cli import main as cli_main

    monkeypatch.setenv("MY_SECRET", SECRET)
    path = tmp_path / "v.toml"
    path.write_text('[health]\nwebhook_url = "${MY_SECRET}"\n')
    path.chmod(0o644)
    assert cli_main(["--config", str(path), "config", "check"]) == 0
    captured = capsys.readouterr()
    assert "readable by group or others" not in captured.err and SECRET not in captured.out + captured.err


# -- fuzzing the new manifest fields ------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)
_VALID = Manifest(
    backup_id=parse_backup_id("db@20261127T230405Z-1a2b"), created=datetime(2026, 1, 1, tzinfo=timezone.utc),
    volume_labels={}, volume_driver="local", volume_driver_opts={}, source_hostname="h", source_docker_id="d",
    volsafe_version="v", tar_size=1, stored_size=1, sha256="a" * 64, entries=1,
)


@settings(max_examples=150, deadline=None)
@given(digest=_JSON, encryption=_JSON)
def test_new_manifest_fields_parse_or_fail_cleanly(digest, encryption):
    data = json.loads(_VALID.to_json())
    data["archive"]["content_digest"] = digest
    data["archive"]["encryption"] = encryption
    try:
        manifest = parse_manifest(json.dumps(data))
    except ManifestError:
        return
    assert manifest.content_digest == digest and isinstance(manifest.encryption_recipients, tuple)


def test_format_version_1_manifest_without_new_fields_still_parses():
    data = json.loads(_VALID.to_json())
    assert "content_digest" not in data["archive"] and "encryption" not in data["archive"]
    manifest = parse_manifest(json.dumps(data))
    assert manifest.content_digest == "" and not manifest.encrypted
