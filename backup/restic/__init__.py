"""restic repositories as targets: ``restic:REPOSITORY`` and ``type = "restic"``.

- ``repository``: the target (``ResticRepository``), its password, running restic on this host,
  restic's errors as one line, and volsafe's manifest data kept in snapshot tags;
- ``helper``: restic inside a locked-down helper container, beside the volume;
- ``actions``: backup, list, restore, verify and prune on a repository.

The actions of ``backup.actions`` ask ``is_repository(target)``; that is the one test that sends a
target here instead of to the byte-object ``storage_backends``.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from backup.restic.repository import PREFIX, ResticRepository
from storage_backends.registry import BackendType, register
from storage_backends.settings import TEXT, Setting


def is_repository(target: object) -> TypeGuard[ResticRepository]:
    """Return whether ``target`` (from ``--to``/``--from`` or ``[backends]``) is a restic repository."""
    return isinstance(target, ResticRepository)


def split_targets(targets: list) -> tuple[list, list[ResticRepository]]:
    """Return (byte-object backends, restic repositories) of ``targets``, each in the order given."""
    return [t for t in targets if not is_repository(t)], [t for t in targets if is_repository(t)]


def _env_table(value: Any, expand) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('must be a table of strings, e.g. { AWS_ACCESS_KEY_ID = "${KEY_ID}" }')
    return {str(k): expand(v) for k, v in value.items()}


def _from_location(location: str) -> ResticRepository:
    return ResticRepository(location[len(PREFIX):])


def _create(settings: dict[str, Any]) -> ResticRepository:
    return ResticRepository(
        settings["repository"],
        password_file=settings.get("password_file"),
        password_command=settings.get("password_command"),
        env=dict(settings.get("env") or {}),
    )


def _check(settings: dict[str, Any]):
    if settings.get("password_file") and settings.get("password_command"):
        yield "give password_file or password_command, not both"


register(
    BackendType(
        "restic",
        settings=(
            Setting("repository", TEXT, "restic repository: a directory, s3:…, sftp:…, rest:… (anything restic -r takes)", required=True),
            Setting("password_file", TEXT, "file whose first line is the repository password (default: RESTIC_PASSWORD_FILE …)"),
            Setting("password_command", TEXT, "command that prints the repository password (default: RESTIC_PASSWORD_COMMAND …)"),
            Setting("env", _env_table, "environment for restic, e.g. the store's credentials (${VAR} expanded)"),
        ),
        create=_create,
        from_url=_from_location,
        prefixes=(PREFIX,),
        repository=True,
        check=_check,
    )
)
