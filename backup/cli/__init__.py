"""The ``volsafe`` command line: one module per command group; this module wires them together.

Results go to stdout (a table, or JSON with --json); logs, progress and warnings go to stderr.
Every failure ends with one line ``volsafe: error: …`` and a non-zero exit; --debug adds the
traceback.
"""

from __future__ import annotations

import importlib
import signal
import sys
import traceback
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from backup import __version__
from backup.cli.options import (
    apply_global_options,
    click_exceptions,
    config_option,
    configure_logging,
    debug_option,
    helper_image_option,
    host_option,
)
from backup.cli.state import State
from backup.errors import Cancelled, Interrupted, UsageError, VolsafeError

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


def _on_signal(signum, _frame) -> None:
    raise Cancelled(signal.Signals(signum).name)


def _usage_message(exc: click_exceptions.UsageError) -> str:
    """Return Click's message for a malformed command line, with a pointer to the command's help."""
    where = exc.ctx.command_path if exc.ctx is not None else "volsafe"
    return f"{exc.format_message()} (see '{where} --help')"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (also the console-script entry point).

    The one place that reports a failure: one line ``volsafe: error: …`` on stderr and the exit
    code of its kind (see backup.errors); with --debug, the traceback after it.
    """
    state = State()

    def fail(message: str, code: int) -> int:
        print(f"volsafe: error: {message}", file=sys.stderr)
        if state.debug:
            traceback.print_exc()
        return code

    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = app(args=argv, prog_name="volsafe", standalone_mode=False, obj=state)
        code = result if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except getattr(click_exceptions, "NoArgsIsHelpError", ()) as exc:  # a group named alone: its help
        exc.show()
        code = exc.exit_code
    except click_exceptions.UsageError as exc:  # unknown option or command, a value missing or invalid
        code = fail(_usage_message(exc), UsageError.exit_code)
    except click_exceptions.ClickException as exc:
        code = fail(exc.format_message(), exc.exit_code)
    except (Cancelled, typer.Abort, KeyboardInterrupt) as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Cancelled) and exc.signal_name == "SIGTERM" else "interrupted"
        code = fail(f"{what}; partial work was cleaned up", Interrupted.exit_code)
    except VolsafeError as exc:  # storage_backends' BackendError included
        code = fail(str(exc), exc.exit_code)
    except Exception as exc:  # a bug, or an error we did not foresee: still one line without --debug
        code = fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)", 1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if argv is None:
        sys.exit(code)
    return code
