"""Runs the one conformance suite (tests/support/backend_conformance.py) against every backend we ship."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.support.backend_conformance")  # before the import, so its asserts explain

from tests.support.backend_conformance import BackendConformance, QUICK_RETRY
from storage_backends.base import Backend
from storage_backends.local import LocalBackend
from storage_backends.retry import RetryingBackend



@pytest.fixture(params=["local", "local+retrying", "s3-inprocess", "s3-http"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Backend:
    """Each backend under test, fresh and empty."""
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    if request.param == "local+retrying":
        return RetryingBackend(LocalBackend(tmp_path / "store"), QUICK_RETRY)
    if request.param == "s3-inprocess":
        return request.getfixturevalue("s3_backend_inprocess")
    return request.getfixturevalue("s3_backend_http")


class TestBackendConformance(BackendConformance):
    """The shared suite, once per backend above."""
