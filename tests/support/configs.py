"""Config files for tests: one local backend ``here`` under a test's directory, and one job using it.

The same few TOML lines stood in five test files; a test now says only what its job differs in.
"""

from __future__ import annotations

from pathlib import Path


def job_config(
    tmp_path: Path, *, job: str = "nightly", volumes: tuple[str, ...] = ("db",), schedule: str = "@daily",
    job_keys: str = "", extra: str = "", store: Path | None = None, status: bool = True,
) -> str:
    """Return TOML with ``[backends.here]`` (a local store, ``tmp_path/store`` unless ``store``), the
    job ``job`` backing up ``volumes`` there on ``schedule`` plus ``job_keys`` (TOML lines), the
    status file under ``tmp_path`` (unless not ``status``), and ``extra`` (more tables) at the end."""
    names = ", ".join(f'"{v}"' for v in volumes)
    health = f'[health]\nstatus_file = "{tmp_path}/status.json"\n' if status else ""
    return (
        f'{health}[backends.here]\ntype = "local"\npath = "{store or tmp_path / "store"}"\n'
        f'[jobs.{job}]\nvolumes = [{names}]\nschedule = "{schedule}"\nbackends = ["here"]\n{job_keys}'
        f"{extra}"
    )
