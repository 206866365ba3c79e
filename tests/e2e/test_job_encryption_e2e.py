"""Jobs encrypt with the config's [encryption] keys, and scheduled verify decrypts with them."""

from __future__ import annotations

import json

import pyrage

from backup.config.schema import parse_config
from backup.jobs.scheduler import Scheduler
from tests.support.configs import job_config
from tests.support.volume_tree import run_in_volume, snapshot


def _config(tmp_path, encryption: str):
    return job_config(tmp_path, volumes=("VOLUME",), job_keys='verify = "@weekly"\n', extra=f"[encryption]\n{encryption}\n")


def _manifests(tmp_path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (tmp_path / "store").rglob("*.json")]


def test_scheduled_job_encrypts_for_config_recipients_and_its_verify_decrypts(docker_host, helper_image, volumes, volsafe, tmp_path):
    volume = volumes()
    run_in_volume(docker_host, helper_image, volume, "echo secret-data > /v/file && mkdir /v/d")
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{identity}\n")
    text = _config(tmp_path, f'recipients = ["{identity.to_public()}"]\nidentity_files = ["{key_file}"]').replace("VOLUME", volume)
    config = parse_config(text, environ={})
    scheduler = Scheduler(config, docker=lambda: docker_host, helper_image=lambda: helper_image)

    assert scheduler.run_once("nightly").ok
    (manifest,) = _manifests(tmp_path)
    assert manifest["archive"]["encryption"]["recipients"]  # fingerprints only
    archive = next((tmp_path / "store").rglob("*.tar.zst")).read_bytes()
    assert archive.startswith(b"age-encryption.org/v1") and b"secret-data" not in archive

    verified = scheduler.run_once("nightly:verify")
    assert verified.ok, verified.errors

    # And the config's identity restores it through the CLI.
    config_file = tmp_path / "volsafe.toml"
    config_file.write_text(text)
    restored = volumes()
    result = volsafe("--config", str(config_file), "restore", volume, "--from", str(tmp_path / "store"), "--to-volume", restored)
    assert result.code == 0, result.err
    assert snapshot(docker_host, helper_image, restored) == snapshot(docker_host, helper_image, volume)


def test_scheduled_job_encrypts_with_the_environment_passphrase(docker_host, helper_image, volumes, tmp_path, monkeypatch):
    volume = volumes()
    run_in_volume(docker_host, helper_image, volume, "echo secret-data > /v/file")
    monkeypatch.setenv("VOLSAFE_PASSPHRASE", "correct horse battery staple")
    config = parse_config(_config(tmp_path, "").replace("VOLUME", volume), environ={})
    scheduler = Scheduler(config, docker=lambda: docker_host, helper_image=lambda: helper_image)

    assert scheduler.run_once("nightly").ok
    (manifest,) = _manifests(tmp_path)
    assert manifest["archive"]["encryption"]["passphrase"] is True
    assert "correct horse" not in json.dumps(manifest)
    verified = scheduler.run_once("nightly:verify")
    assert verified.ok, verified.errors

    monkeypatch.setenv("VOLSAFE_PASSPHRASE", "wrong")
    wrong = Scheduler(config, docker=lambda: docker_host, helper_image=lambda: helper_image).run_once("nightly:verify")
    assert not wrong.ok and "passphrase" in wrong.errors[0]
