"""S3 uploads longer than MAX_PARTS parts of the configured size: the parts grow, so any object up to
S3's 5 TiB goes up, with memory bounded.

S3's limits are lowered here (6 parts, a 64 MiB "largest object") so that the same arithmetic runs on
megabytes against moto's in-process S3: at the configured 5 MiB, 6 parts hold 30 MiB, and the old
fixed-size upload failed at part 7 with "raise part_size".
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

pytest.register_assert_rewrite("tests.support.backend_conformance")  # before the import, so its asserts explain

from storage_backends import s3 as s3_module  # noqa: E402
from storage_backends.base import NotFound, PermanentError  # noqa: E402
from storage_backends.s3 import S3Backend  # noqa: E402
from tests.support.backend_conformance import (  # noqa: E402
    MiB,
    PART,
    PREFIX,
    QUICK_RETRY,
    created_bucket,
    leftovers,
    payload,
    read_all,
    unique_bucket_name,
)

LIMIT = 6
LARGEST = 64 * MiB
CONCURRENCY = 3


class Recorder:
    """Wraps the backend's UploadPart: records each part's size and the most bytes being uploaded at
    once (each part held a little, so that parts overlap as they do over a real network)."""

    def __init__(self, backend: S3Backend):
        self.sizes: list[int] = []
        self.uploading = 0
        self.most_uploading = 0
        self.lock = threading.Lock()
        real = backend.client.upload_part

        def upload_part(**kwargs):
            size = len(kwargs["Body"])
            with self.lock:
                self.sizes.append(size)
                self.uploading += size
                self.most_uploading = max(self.most_uploading, self.uploading)
            try:
                time.sleep(0.05)
                return real(**kwargs)
            finally:
                with self.lock:
                    self.uploading -= size

        backend.client.upload_part = upload_part


@pytest.fixture
def s3(s3_inprocess, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Backend]:
    monkeypatch.setattr(s3_module, "MAX_PARTS", LIMIT)
    monkeypatch.setattr(s3_module, "MAX_OBJECT_SIZE", LARGEST, raising=False)  # raising=False: run against the old code too
    backend = S3Backend(unique_bucket_name(), PREFIX, part_size=PART, concurrency=CONCURRENCY, retry=QUICK_RETRY)
    with created_bucket(backend):
        yield backend


def chunked(data: bytes, size: int = 1 * MiB) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_stream_longer_than_the_part_limit_at_the_first_size_goes_up_in_growing_parts(s3: S3Backend) -> None:
    data = payload(60 * MiB, seed=19)  # 12 parts of 5 MiB: twice the limit
    recorder = Recorder(s3)
    assert s3.save("vol/big.tar.zst", chunked(data)) == len(data)

    assert read_all(s3, "vol/big.tar.zst") == data
    assert len(recorder.sizes) <= LIMIT
    etag = s3.client.head_object(Bucket=s3.bucket, Key=s3._key("vol/big.tar.zst"))["ETag"]
    assert etag.strip('"').endswith(f"-{len(recorder.sizes)}")  # S3 joined that many parts
    assert sorted(recorder.sizes[:-1]) == recorder.sizes[:-1]  # they only grow (the last is the rest)
    assert min(recorder.sizes[:-1]) >= s3_module.MIN_PART_SIZE
    largest = max(recorder.sizes)
    assert largest < len(data) / 2  # still parts, not the whole stream in memory
    # The stated bound: the larger of part_size * (concurrency + 1) and twice the largest part,
    # for the parts being uploaded plus the one filling up.
    bound = max(PART * (CONCURRENCY + 1), 2 * largest)
    assert recorder.most_uploading + largest <= bound
    assert recorder.most_uploading > PART  # parts did go up side by side
    assert leftovers(s3) == []


def test_a_stream_within_the_first_sizes_share_keeps_it(s3: S3Backend) -> None:
    assert s3.parts_per_size == 2  # 5, 5, 10, 10, 20, 20 MiB: 70 MiB in 6 parts
    data = payload(2 * PART + 1000, seed=20)
    recorder = Recorder(s3)
    assert s3.save("vol/small.tar.zst", chunked(data)) == len(data)
    assert recorder.sizes == [PART, PART, 1000]
    assert read_all(s3, "vol/small.tar.zst") == data


@pytest.mark.parametrize("first", [s3_module.MIN_PART_SIZE, s3_module.DEFAULT_PART_SIZE, 64 * MiB, s3_module.MAX_PART_SIZE])
def test_with_s3s_own_limits_any_object_up_to_5_tib_fits_in_10000_parts(first: int) -> None:
    step = s3_module.parts_per_size(first)
    sizes = [s3_module.part_size(n, first, step) for n in range(1, s3_module.MAX_PARTS + 1)]
    assert sum(sizes) >= 5 * 1024**4
    assert max(sizes) <= s3_module.MAX_PART_SIZE and min(sizes) == first
    if first == s3_module.DEFAULT_PART_SIZE:
        assert step >= 1000  # the first 16 GiB go up in 16 MiB parts, as before


def test_beyond_the_largest_object_the_upload_is_aborted_with_one_clear_line(s3: S3Backend) -> None:
    data = payload(LARGEST + 10 * MiB, seed=21)
    with pytest.raises(PermanentError) as caught:
        s3.save("vol/huge.tar.zst", chunked(data))
    message = str(caught.value)
    assert message.startswith(f"{s3.url}: cannot write vol/huge.tar.zst: larger than S3's largest object")
    assert "raise part_size" not in message
    assert leftovers(s3) == []
    with pytest.raises(NotFound):
        s3.stat("vol/huge.tar.zst")
