"""The ``volsafe`` command line: one module per command group; this module wires them together.

Results go to stdout (a table, or JSON with --json); logs, progress and warnings go to stderr.
Every failure ends with one line ``volsafe: error: …`` and a non-zero exit; --debug adds the
traceback.
"""

from __future__ import annotations

import signal
import sys
import traceback

import typer

from backup import __version__
from backup.cli import backup_cmd, config_cmd, helper_cmd, jobs_cmd, list_cmd, prune_cmd, restore_cmd, run_cmd
from backup.cli import migrate_cmd
from backup.cli import verify_cmd
from backup.cli import volumes_cmd
from backup.cli import status_cmd
from backup.cli import delete_cmd
from backup.cli import repo_cmd
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

app = typer.Typer(
    name="volsafe",
    help="Back up, restore and migrate Docker volumes as zstd-compressed tar archives.\n\n"
    "The options below except --version may also follow the command name.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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


backup_cmd.register(app)
restore_cmd.register(app)
list_cmd.register(app)
prune_cmd.register(app)
config_cmd.register(app)
jobs_cmd.register(app)
run_cmd.register(app)
helper_cmd.register(app)
migrate_cmd.register(app)
verify_cmd.register(app)
volumes_cmd.register(app)
status_cmd.register(app)
delete_cmd.register(app)
repo_cmd.register(app)


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
