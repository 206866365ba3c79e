"""The ``volsafe`` command line: one module per command group (``app`` wires them together); this
module runs it.

Results go to stdout (a table, or JSON with --json); logs, progress and warnings go to stderr.
Every failure ends with one line ``volsafe: error: …`` and a non-zero exit; --debug adds the
traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from backup import __version__

if TYPE_CHECKING:
    from backup.cli.options import click_exceptions

# Everything else is imported in main(), after the --version answer: backup.cli.state and
# backup.errors bring storage_backends, dataclasses and pathlib (about 0.04 s of --version's 0.15 s).


def _usage_message(exc: click_exceptions.UsageError) -> str:
    """Return Click's message for a malformed command line, with a pointer to the command's help."""
    where = exc.ctx.command_path if exc.ctx is not None else "volsafe"
    return f"{exc.format_message()} (see '{where} --help')"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (also the console-script entry point).

    The one place that reports a failure: one line ``volsafe: error: …`` on stderr and the exit
    code of its kind (see backup.errors); with --debug, the traceback after it.
    """
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:  # the one answer that needs neither Click nor a command: no import of either
        print(f"volsafe {__version__}")
        return _exit(0, argv)

    import signal
    import traceback

    import typer

    from backup.cli.app import app
    from backup.cli.options import click_exceptions
    from backup.cli.state import State
    from backup.errors import Cancelled, Interrupted, UsageError, VolsafeError

    def on_signal(signum, _frame) -> None:  # defined here: backup.errors is imported by now
        raise Cancelled(signal.Signals(signum).name)

    state = State()

    def fail(message: str, code: int) -> int:
        print(f"volsafe: error: {message}", file=sys.stderr)
        if state.debug:
            traceback.print_exc()
        return code

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
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
    return _exit(code, argv)


def _exit(code: int, argv: list[str] | None) -> int:
    """Return ``code`` to a caller that passed ``argv``; exit with it when run as the console script."""
    if argv is None:
        sys.exit(code)
    return code
