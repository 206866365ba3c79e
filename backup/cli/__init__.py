"""The ``volsafe`` command line: one module per command group; this module wires them together.

Results go to stdout (a table, or JSON with --json); logs, progress and warnings go to stderr.
Every failure ends with one line ``volsafe: error: …`` and a non-zero exit; --debug adds the
traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback

import click
import typer

from backup import __version__
from backup.cli import backup_cmd, config_cmd, helper_cmd, jobs_cmd, list_cmd, prune_cmd, restore_cmd, run_cmd
from backup.cli import migrate_cmd
from backup.cli import verify_cmd
from backup.cli import volumes_cmd
from backup.cli.logsafe import guard
from backup.cli.state import State
from backup.locations import use_named_backends
from backup.errors import Cancelled, Interrupted, VolsafeError

app = typer.Typer(
    name="volsafe",
    help="Back up, restore and migrate Docker volumes as zstd-compressed tar archives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


_debug = False  # set by the root options; read when an error is reported


def _version(value: bool) -> None:
    if value:
        typer.echo(f"volsafe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    host: str = typer.Option(
        None, "--host", "-H", help="Docker daemon to use, e.g. unix:///var/run/docker.sock [default: $DOCKER_HOST]"
    ),
    helper_image: str = typer.Option(
        None,
        "--helper-image",
        envvar="VOLSAFE_HELPER_IMAGE",
        help="Image with busybox tar for helper containers [default: volsafe-helper:latest if present, else busybox:stable]",
    ),
    config: str = typer.Option(
        None,
        "--config",
        "-c",
        metavar="FILE",
        help="Config file [default: $VOLSAFE_CONFIG, else ./volsafe.toml, else ~/.config/volsafe/config.toml, if present]",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show debug logs and tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Back up, restore and migrate Docker volumes."""
    global _debug
    _debug = debug
    state = State(host=host, helper_image_option=helper_image, debug=debug, config_option=config)
    ctx.obj = state
    # --to/--from NAME resolve through the config's [backends]; it is read only when a name is used.
    use_named_backends(lambda: state.config.backends)
    _configure_logging(debug)


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


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("volsafe: %(levelname)s: %(message)s" if not debug else "%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    # Hook output, containers stopped and restarted, crash recovery: what a user wants to see happen.
    for told in ("volsafe.hooks", "volsafe.quiesce", "volsafe.recovery"):
        logging.getLogger(told).setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        for noisy in ("botocore", "boto3", "urllib3", "docker", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    guard(handler, debug)  # no credentials in logs, even with --debug


def _on_signal(signum, _frame) -> None:
    raise Cancelled(signal.Signals(signum).name)


def _fail(message: str, code: int) -> int:
    print(f"volsafe: error: {message}", file=sys.stderr)
    if _debug:
        traceback.print_exc()
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (also the console-script entry point)."""
    global _debug
    _debug = False
    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = app(args=argv, prog_name="volsafe", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (Cancelled, click.Abort, KeyboardInterrupt) as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Cancelled) and exc.signal_name == "SIGTERM" else "interrupted"
        code = _fail(f"{what}; partial work was cleaned up", Interrupted.exit_code)
    except VolsafeError as exc:
        code = _fail(str(exc), exc.exit_code)
    except Exception as exc:  # a bug, or an error we did not foresee: still one line without --debug
        code = _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)", 1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if argv is None:
        sys.exit(code)
    return code
