"""End to end through the CLI against a real daemon and moto's S3 server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.support.volume_tree import fill_tricky, snapshot

pytestmark = pytest.mark.docker


def test_backup_list_restore_through_s3(docker_host, helper_image, volumes, volsafe, bucket):
    source, copy = volumes("s3src"), volumes("s3copy")
    fill_tricky(docker_host, helper_image, source)
    before = snapshot(docker_host, helper_image, source)
    url = f"s3://{bucket}/backups/prod"

    made = volsafe("backup", source, "--to", url, "--json")
    assert made.code == 0, made.err
    (record,) = json.loads(made.out)
    assert record["backend"] == url

    listed = json.loads(volsafe("list", "--from", url, "--json").out)
    assert [r["id"] for r in listed] == [record["id"]]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    stamp = record["id"].split("@")[1]
    assert sorted(keys) == sorted([f"backups/prod/{source}/{stamp}.tar.zst", f"backups/prod/{source}/{stamp}.json"])

    restored = volsafe("restore", record["id"], "--from", url, "--to-volume", copy)
    assert restored.code == 0, restored.err
    assert snapshot(docker_host, helper_image, copy) == before


def test_one_pass_to_local_and_s3(docker_host, helper_image, volumes, volsafe, bucket, tmp_path):
    volume = volumes("multi")
    fill_tricky(docker_host, helper_image, volume)
    url = f"s3://{bucket}/p"
    made = volsafe("backup", volume, "--to", str(tmp_path), "--to", url, "--json")
    assert made.code == 0, made.err
    records = json.loads(made.out)
    assert {r["backend"] for r in records} == {tmp_path.as_uri(), url}
    assert len({r["id"] for r in records}) == 1 and len({r["sha256"] for r in records}) == 1
    stamp = records[0]["id"].split("@")[1]
    local_bytes = (tmp_path / volume / f"{stamp}.tar.zst").read_bytes()
    s3_bytes = boto3.client("s3").get_object(Bucket=bucket, Key=f"p/{volume}/{stamp}.tar.zst")["Body"].read()
    assert local_bytes == s3_bytes


def test_failing_backend_is_reported_and_others_complete(docker_host, helper_image, volumes, volsafe, bucket, tmp_path):
    volume = volumes("partial")
    fill_tricky(docker_host, helper_image, volume)
    missing = f"s3://{bucket}-missing/p"
    made = volsafe("backup", volume, "--to", str(tmp_path), "--to", missing, "--json")
    assert made.code == 1
    (record,) = json.loads(made.out)
    assert record["backend"] == tmp_path.as_uri()
    (line,) = [ln for ln in made.err.splitlines() if "error" in ln]
    assert missing in line and "bucket" in line and "SECRET" not in made.err
    listed = json.loads(volsafe("list", "--from", str(tmp_path), "--json").out)
    assert [r["id"] for r in listed] == [record["id"]]
