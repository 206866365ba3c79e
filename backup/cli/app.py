"""The root command: the global options, --version, and each command's module loaded when it runs."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from backup import __version__
from backup.cli.options import apply_global_options, config_option, configure_logging, debug_option, helper_image_option, host_option
from backup.cli.state import State

# Each command's module, in the order --help lists them. A module (and the actions, Docker SDK,
# boto3, ... it imports) loads only when its command runs or --help lists the commands: --version
# and each single command pay only for what they use.
COMMANDS = {
    "backup": "backup_cmd",
    "restore": "restore_cmd",
    "list": "list_cmd",
    "prune": "prune_cmd",
    "run": "run_cmd",
    "migrate": "migrate_cmd",
    "verify": "verify_cmd",
    "volumes": "volumes_cmd",
    "status": "status_cmd",
    "delete": "delete_cmd",
    "config": "config_cmd",
    "jobs": "jobs_cmd",
    "helper-image": "helper_cmd",
    "repo": "repo_cmd",
}

_APP_SETTINGS: dict[str, Any] = dict(
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _load(name: str) -> Any:
    """Return command ``name``'s Click command, built from its module's ``register(app)``."""
    module = importlib.import_module(f"backup.cli.{COMMANDS[name]}")
    holder = typer.Typer(**_APP_SETTINGS)
    module.register(holder)
    return typer.main.get_group(holder).commands[name]


class _Commands(MutableMapping):
    """The root's name -> command mapping: every name in COMMANDS is there, its command built when
    first looked up (to run it, or by --help listing them all)."""

    def __init__(self) -> None:
        self.built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built and name in COMMANDS:
            self.built[name] = _load(name)
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(COMMANDS), **self.built})

    def __len__(self) -> int:
        return len({**dict.fromkeys(COMMANDS), **self.built})


class LazyGroup(TyperGroup):
    """The root command, with its sub-commands in a ``_Commands`` mapping: looking one up by name
    (to run it, or to suggest a near name for a typo) builds only that one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _Commands()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only; TyperGroup's would build every command


app = typer.Typer(
    cls=LazyGroup,
    name="volsafe",
    help="Back up, restore and migrate Docker volumes as zstd-compressed tar archives.\n\n"
    "The options below except --version may also follow the command name.",
    no_args_is_help=True,
    **_APP_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"volsafe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    host: str = host_option(),
    helper_image: str = helper_image_option(from_env=True),
    config: str = config_option(),
    debug: bool = debug_option(),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Back up, restore and migrate Docker volumes."""
    state = ctx.ensure_object(State)
    apply_global_options(state, host=host, helper_image=helper_image, config=config, debug=debug)
    configure_logging(state.debug)
