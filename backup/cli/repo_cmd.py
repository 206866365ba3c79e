"""``volsafe repo``: create a restic repository, remove its stale locks."""

from __future__ import annotations

import typer

from backup.cli.options import command
from backup.config.locations import open_locations
from backup.errors import UsageError
from backup.restic import is_repository

repo_app = typer.Typer(
    help="Manage restic repositories used as targets (restic:REPOSITORY or type = \"restic\").",
    no_args_is_help=True, rich_markup_mode=None,
)
_TARGET_HELP = "restic:REPOSITORY (a directory, s3:…, sftp:…, rest:…), or the name of a [backends] table of type \"restic\"."


def _repository(ctx: typer.Context, target: str):
    opened = open_locations([target], ctx.obj.backends)[0]
    if not is_repository(opened):
        raise UsageError(f"{target}: not a restic repository (write restic:REPOSITORY, or name a backend of type \"restic\")")
    return opened


@command(repo_app, "init")
def init(ctx: typer.Context, target: str = typer.Argument(..., metavar="TARGET", help=_TARGET_HELP)) -> None:
    """Create a restic repository, with the password from password_file / password_command or
    RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND, RESTIC_PASSWORD. volsafe never creates one by itself."""
    repo = _repository(ctx, target)
    repo.init()
    typer.echo(f"volsafe: created restic repository {repo.url}", err=True)


@command(repo_app, "unlock")
def unlock(
    ctx: typer.Context,
    target: str = typer.Argument(..., metavar="TARGET", help=_TARGET_HELP),
    remove_all: bool = typer.Option(
        False, "--all", help="Remove every lock, not only stale ones (restic unlock --remove-all): only when no restic uses the repository."
    ),
) -> None:
    """Remove the locks a killed restic left behind (restic unlock)."""
    repo = _repository(ctx, target)
    repo.unlock(remove_all=remove_all)
    typer.echo(f"volsafe: removed {'all' if remove_all else 'stale'} locks from {repo.url}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")
