"""The storage-backend conformance suite, written once for every backend.

Registered for every test by ``tests/conftest.py`` (which makes the fixtures
below available, the session-wide moto server included), defines a parametrised ``backend`` fixture,
and subclasses ``BackendConformance``. ``tests/unit/test_backend_conformance.py`` does that for the local
directory backend (bare and behind ``RetryingBackend``) and for S3 via moto, in-process and over HTTP.

What a backend may leave behind after an interrupted save (temporary files, incomplete multipart
uploads) is found by ``leftovers(backend)``, which looks behind the interface.
"""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from typing import Iterator

import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from storage_backends.base import Backend, NotFound, PermanentError
from storage_backends.local import TEMP_MARKER, LocalBackend
from storage_backends.retry import RetryingBackend, RetryPolicy
from storage_backends.s3 import S3Backend

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 allows, so multi-part objects stay small
MULTI = 2 * PART + 12_345  # three parts, the last one short
PREFIX = "pre/fix"
#: The secret the S3 fixtures use; tests check that no message ever shows it.
SECRET = "volsafe-test-SECRET-d0n7-l3ak"
#: Retries without waiting, so that fault tests stay fast.
QUICK_RETRY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.001, sleep=lambda _s: None)


# -- data helpers ----------------------------------------------------------------------------


def payload(size: int, seed: int = 0) -> bytes:
    """Return ``size`` reproducible pseudo-random (incompressible) bytes."""
    return random.Random(seed).randbytes(size)


def uneven_chunks(data: bytes) -> Iterator[bytes]:
    """Yield ``data`` in awkward pieces: empty ones, single bytes, and some larger than a part."""
    sizes = [0, 1, 65_536, PART + 7, 3, 300_000]
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        i += 1
        piece = data[pos:pos + size]
        # Mix the bytes-like types a producer may hand over.
        yield bytearray(piece) if i % 3 == 0 else memoryview(piece) if i % 3 == 1 else piece
        pos += size


class Boom(Exception):
    """The failure a test's chunk iterator raises."""


def failing_chunks(data: bytes, fail_at: int, exc: BaseException | None = None) -> Iterator[bytes]:
    """Yield ``data[:fail_at]`` in 1 MiB chunks, then raise ``exc`` (a Boom by default)."""
    for pos in range(0, fail_at, MiB):
        yield data[pos:min(pos + MiB, fail_at)]
    raise exc if exc is not None else Boom(f"producer failed after {fail_at} bytes")


def read_all(backend: Backend, key: str, offset: int = 0) -> bytes:
    """Return the whole object from ``offset`` on, closing the stream."""
    with backend.open(key, offset) as stream:
        return stream.read()


def leftovers(backend: Backend) -> list[str]:
    """Return what an unfinished save left behind: temporary files or incomplete multipart uploads."""
    while isinstance(backend, RetryingBackend):
        backend = backend.inner
    if isinstance(backend, LocalBackend):
        return sorted(str(p) for p in backend.root.rglob(f"*{TEMP_MARKER}*"))
    if isinstance(backend, S3Backend):
        answer = backend.client.list_multipart_uploads(Bucket=backend.bucket)
        return sorted(upload["Key"] for upload in answer.get("Uploads", []))
    raise TypeError(f"no leftovers check for {backend!r}")


# -- S3 set-up -------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Isolate boto3 from the host: dummy credentials, no config files, no instance metadata
    lookups (which would leave 127.0.0.1), no endpoint override."""
    for name in (
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "volsafe-test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 (a free port) for the session; yield its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def unique_bucket_name() -> str:
    return f"volsafe-test-{uuid.uuid4().hex[:16]}"


@contextlib.contextmanager
def created_bucket(backend: S3Backend) -> Iterator[S3Backend]:
    """Create ``backend``'s bucket; on exit abort its uploads, empty it and delete it.

    Uses the backend's own client: it was configured through the standard chain (so it honours
    AWS_ENDPOINT_URL), and making another client costs 0.15 s of model loading per test.
    """
    client = backend.client
    client.create_bucket(Bucket=backend.bucket)
    # Objects outside the backend's prefix (one shares its first characters) must never show up.
    client.put_object(Bucket=backend.bucket, Key=f"{PREFIX}ture/not-mine", Body=b"x")
    client.put_object(Bucket=backend.bucket, Key="elsewhere/not-mine", Body=b"x")
    try:
        yield backend
    finally:
        delete_bucket(client, backend.bucket)
        backend.close()


def delete_bucket(client, bucket: str) -> None:
    """Abort every multipart upload in ``bucket``, delete every object, then the bucket."""
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=entry["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_inprocess(aws_env) -> Iterator[None]:
    """moto's in-process S3 mock, active for the test."""
    with mock_aws():
        yield


@pytest.fixture
def s3_http(aws_env, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the AWS chain at moto's HTTP server through AWS_ENDPOINT_URL; return the endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def bucket(s3_http) -> Iterator[str]:
    """A fresh bucket on moto's server, reached through AWS_ENDPOINT_URL; emptied and removed afterwards."""
    import boto3

    client = boto3.client("s3")
    name = unique_bucket_name()
    client.create_bucket(Bucket=name)
    yield name
    delete_bucket(client, name)


@pytest.fixture
def s3_backend_inprocess(s3_inprocess) -> Iterator[S3Backend]:
    """An S3Backend on a fresh bucket of moto's in-process mock."""
    backend = S3Backend(unique_bucket_name(), PREFIX, part_size=PART, concurrency=3, retry=QUICK_RETRY)
    with created_bucket(backend):
        yield backend


@pytest.fixture
def s3_backend_http(s3_http) -> Iterator[S3Backend]:
    """An S3Backend made from an s3:// URL, on a fresh bucket of moto's HTTP server."""
    url = f"s3://{unique_bucket_name()}/{PREFIX}"
    backend = S3Backend.from_url(url, part_size=PART, concurrency=3, retry=QUICK_RETRY)
    with created_bucket(backend):
        yield backend


# -- the suite -------------------------------------------------------------------------------


class BackendConformance:
    """What every Backend must do. Needs a ``backend`` fixture."""

    @pytest.mark.parametrize("size", [0, 1, 1000, PART, MULTI], ids=["empty", "1B", "small", "one-part", "multi-part"])
    def test_round_trip(self, backend: Backend, size: int) -> None:
        data = payload(size, seed=size)
        assert backend.save("vol/archive.tar.zst", uneven_chunks(data)) == size
        assert read_all(backend, "vol/archive.tar.zst") == data
        assert backend.stat("vol/archive.tar.zst").size == size
        assert leftovers(backend) == []

    def test_save_accepts_list_of_chunks(self, backend: Backend) -> None:
        assert backend.save("k", [b"ab", b"", bytearray(b"cd"), memoryview(b"ef")]) == 6
        assert read_all(backend, "k") == b"abcdef"

    def test_overwrite_replaces_object(self, backend: Backend) -> None:
        backend.save("vol/a", [payload(MULTI, seed=1)])
        new = payload(1234, seed=2)
        assert backend.save("vol/a", [new]) == len(new)
        assert read_all(backend, "vol/a") == new
        assert backend.stat("vol/a").size == len(new)
        assert [info.key for info in backend.list()] == ["vol/a"]

    def test_open_with_offset(self, backend: Backend) -> None:
        data = payload(MULTI, seed=3)
        backend.save("k", iter([data]))
        for offset in (0, 1, PART - 1, PART, MULTI - 1, MULTI, MULTI + 10):
            assert read_all(backend, "k", offset) == data[offset:], f"offset {offset}"

    def test_stream_reads_in_pieces(self, backend: Backend) -> None:
        data = payload(PART + 100, seed=4)
        backend.save("k", [data])
        got = bytearray()
        with backend.open("k") as stream:
            got += stream.read(10)
            buf = bytearray(70_000)
            n = stream.readinto(buf)
            got += buf[:n]
            while piece := stream.read(1_000_003):
                got += piece
            assert stream.read(5) == b""
        assert bytes(got) == data

    def test_list_by_prefix(self, backend: Backend) -> None:
        sizes = {"a/1": 1, "a/2": 2, "a/b/3": 3, "ab/4": 4, "b/5": 5}
        for key, size in sizes.items():
            backend.save(key, [b"x" * size])

        def listed(prefix: str) -> dict[str, int]:
            return {info.key: info.size for info in backend.list(prefix)}

        assert listed("") == sizes
        assert listed("a/") == {"a/1": 1, "a/2": 2, "a/b/3": 3}
        assert listed("a") == {"a/1": 1, "a/2": 2, "a/b/3": 3, "ab/4": 4}
        assert listed("a/b/") == {"a/b/3": 3}
        assert listed("a/b") == {"a/b/3": 3}
        assert listed("zzz") == {}

    def test_list_of_empty_backend_is_empty(self, backend: Backend) -> None:
        # The S3 fixtures put objects beside the backend's prefix: they must not show.
        assert list(backend.list()) == []

    def test_stat_reports_size_and_time(self, backend: Backend) -> None:
        backend.save("x/y", [b"12345"])
        info = backend.stat("x/y")
        assert (info.key, info.size) == ("x/y", 5)
        assert info.modified is not None and info.modified.tzinfo is not None
        (listed,) = backend.list("x/")
        assert (listed.key, listed.size) == ("x/y", 5)

    @pytest.mark.parametrize("operation", ["open", "stat", "remove"])
    def test_missing_key_raises_not_found(self, backend: Backend, operation: str) -> None:
        backend.save("present", [b"1"])
        with pytest.raises(NotFound) as caught:
            getattr(backend, operation)("absent/key")
        assert str(caught.value).startswith(backend.url)
        assert "\n" not in str(caught.value)

    def test_remove_deletes_the_object(self, backend: Backend) -> None:
        backend.save("d/1", [b"1"])
        backend.save("d/2", [b"2"])
        backend.remove("d/1")
        with pytest.raises(NotFound):
            backend.stat("d/1")
        assert [info.key for info in backend.list()] == ["d/2"]
        with pytest.raises(NotFound):
            backend.remove("d/1")

    @pytest.mark.parametrize("operation", ["open", "stat", "remove"])
    def test_a_prefix_is_not_an_object(self, backend: Backend, operation: str) -> None:
        # A "directory" (a prefix that other keys sit below) is no object of its own, in every backend.
        backend.save("vol/sub/obj", [b"1"])
        for key in ("vol", "vol/sub"):
            with pytest.raises(NotFound):
                getattr(backend, operation)(key)
        assert read_all(backend, "vol/sub/obj") == b"1"
        assert [info.key for info in backend.list()] == ["vol/sub/obj"]

    @pytest.mark.parametrize("fail_at", [0, 100, PART, 2 * PART + PART // 2], ids=["at-once", "first-part", "one-part", "later-parts"])
    def test_failed_save_leaves_nothing(self, backend: Backend, fail_at: int) -> None:
        data = payload(fail_at + 1, seed=5)
        with pytest.raises(Boom):
            backend.save("vol/new", failing_chunks(data, fail_at))
        with pytest.raises(NotFound):
            backend.stat("vol/new")
        assert list(backend.list()) == []
        assert leftovers(backend) == []

    def test_failed_save_keeps_the_older_object(self, backend: Backend) -> None:
        old = payload(PART + 3, seed=6)
        backend.save("vol/a", [old])
        with pytest.raises(Boom):
            backend.save("vol/a", failing_chunks(payload(MULTI, seed=7), 2 * PART + 1))
        assert read_all(backend, "vol/a") == old
        assert backend.stat("vol/a").size == len(old)
        assert leftovers(backend) == []

    def test_keyboard_interrupt_in_chunks_leaves_nothing(self, backend: Backend) -> None:
        with pytest.raises(KeyboardInterrupt):
            backend.save("vol/a", failing_chunks(payload(MULTI, seed=8), 2 * PART + 1, KeyboardInterrupt()))
        with pytest.raises(NotFound):
            backend.stat("vol/a")
        assert leftovers(backend) == []

    @pytest.mark.parametrize("key", ["../x", "/abs", "a/../b", "a\x00b", "", "a//b", "./a", "a/", "a\\b"])
    def test_invalid_keys_are_refused(self, backend: Backend, key: str) -> None:
        consumed = []

        def chunks() -> Iterator[bytes]:
            consumed.append(True)
            yield b"data"

        for operation in ("save", "open", "stat", "remove"):
            with pytest.raises(PermanentError):
                if operation == "save":
                    backend.save(key, chunks())
                else:
                    getattr(backend, operation)(key)
        assert consumed == []  # refused before reading any input
        assert list(backend.list()) == []

    @pytest.mark.parametrize("prefix", ["../", "/abs", "a/../"])
    def test_invalid_list_prefix_is_refused(self, backend: Backend, prefix: str) -> None:
        with pytest.raises(PermanentError):
            list(backend.list(prefix))

    def test_repr_and_url_name_the_backend(self, backend: Backend) -> None:
        assert backend.url in repr(backend)
        assert SECRET not in repr(backend) and SECRET not in backend.url
