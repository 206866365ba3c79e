"""Test helper: where the whole suite must run (CI, scripts/test), a missing prerequisite fails.

``VOLSAFE_REQUIRE_DOCKER=1`` (set by scripts/test) or ``CI=true`` mean that every test must really
run: Docker tests fail rather than skip without a daemon (tests/conftest.py), and so does any test
whose own prerequisite (the age CLI, a tmpfs mount) is missing. Elsewhere such a test is skipped.
"""

from __future__ import annotations

import os

import pytest


def required() -> bool:
    """Return whether skipping is not allowed in this run."""
    return os.environ.get("VOLSAFE_REQUIRE_DOCKER") == "1" or os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> None:
    """Skip the running test for ``reason``, or fail it where the whole suite must run."""
    if required():
        pytest.fail(f"{reason}; this run requires every test (VOLSAFE_REQUIRE_DOCKER=1 or CI=true)", pytrace=False)
    pytest.skip(reason)
