"""Config files for tests: one local backend (``here``, unless named) under a test's directory, and one job using it.

The same few TOML lines stood in five test files; a test now says only what its job differs in.
"""

from __future__ import annotations

from pathlib import Path


def job_table(
    job: str, *, volumes: tuple[str, ...] | None = ("db",), schedule: str = "@daily", backend: str = "here", job_keys: str = ""
) -> str:
    """Return the TOML table ``[jobs.JOB]``: ``volumes`` (no such line if None, for a job that selects
    by ``projects`` or ``labels`` in ``job_keys``) on ``schedule`` to ``backend``, plus ``job_keys`` (TOML lines)."""
    names = "" if volumes is None else "volumes = [" + ", ".join(f'"{v}"' for v in volumes) + "]\n"
    return f'[jobs.{job}]\n{names}schedule = "{schedule}"\nbackends = ["{backend}"]\n{job_keys}'


def job_config(
    tmp_path: Path, *, job: str = "nightly", volumes: tuple[str, ...] | None = ("db",), schedule: str = "@daily",
    job_keys: str = "", extra: str = "", store: Path | None = None, status: bool = True, health_keys: str = "",
    backend: str = "here",
) -> str:
    """Return TOML with ``[backends.BACKEND]`` (a local store, ``tmp_path/store`` unless ``store``), the
    job ``job`` backing up ``volumes`` there on ``schedule`` plus ``job_keys`` (TOML lines; see
    job_table), the status file under ``tmp_path`` (unless not ``status``) with ``health_keys`` (more
    [health] lines), and ``extra`` (more tables, such as another job_table) at the end."""
    health = f'[health]\nstatus_file = "{tmp_path}/status.json"\n{health_keys}' if status else ""
    return (
        f'{health}[backends.{backend}]\ntype = "local"\npath = "{store or tmp_path / "store"}"\n'
        f"{job_table(job, volumes=volumes, schedule=schedule, backend=backend, job_keys=job_keys)}"
        f"{extra}"
    )
