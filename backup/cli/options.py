"""What every command shares: the global options, the usage line's notation, logging set-up.

The global options (--host, --helper-image, --config, --debug) are declared on the root command and
again on each command, so they work before or after the command's name and each command's --help
lists them. Given in both places, the one after the command name wins.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from typing import Any, Callable, Optional, TypeVar

import typer
from typer.core import TyperCommand

try:  # typer 0.2x and later run on their own copy of Click
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer runs on Click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]  # the same module, from Click itself

from backup.cli.logsafe import guard
from backup.cli.state import State, nonempty

F = TypeVar("F", bound=Callable[..., Any])

_HOST_HELP = "Docker daemon to use: a unix://, tcp:// or ssh:// URL, or a Docker context name [default: $DOCKER_HOST]"
_HELPER_IMAGE_HELP = "Image with busybox tar for helper containers [default: {env}volsafe-helper:latest if present, else busybox:stable]"
_CONFIG_HELP = "Config file [default: $VOLSAFE_CONFIG, else ./volsafe.toml, else ~/.config/volsafe/config.toml, else /etc/volsafe/volsafe.toml, if present]"
_DEBUG_HELP = "Show debug logs and tracebacks."


def host_option() -> Any:
    return typer.Option(None, "--host", "-H", metavar="URL", help=_HOST_HELP)


def helper_image_option(*, from_env: bool) -> Any:
    """The root's option also reads $VOLSAFE_HELPER_IMAGE; a command's does not, or the variable
    would override a --helper-image given before the command name."""
    if from_env:
        return typer.Option(
            None, "--helper-image", metavar="IMAGE", envvar="VOLSAFE_HELPER_IMAGE", help=_HELPER_IMAGE_HELP.format(env="")
        )
    return typer.Option(None, "--helper-image", metavar="IMAGE", help=_HELPER_IMAGE_HELP.format(env="$VOLSAFE_HELPER_IMAGE, else "))


def config_option() -> Any:
    return typer.Option(None, "--config", "-c", metavar="FILE", help=_CONFIG_HELP)


def debug_option() -> Any:
    return typer.Option(False, "--debug", help=_DEBUG_HELP)


def value_option(flag: str, metavar: str, help: str) -> Any:
    """An option that takes a value (default None), refused when given empty (``--from ""``)."""
    return typer.Option(None, flag, metavar=metavar, help=help, callback=nonempty)


def from_option(what: str, *, repeatable: bool = True, which: str = "") -> Any:
    """--from BACKEND: the backends a command reads, given as ``Backend to WHAT``; ``which`` says
    which of the config's backends is read by default (all of them, unless it says otherwise)."""
    return value_option(
        "--from", "BACKEND",
        f"Backend to {what}{' (repeatable)' if repeatable else ''}: a name from the config, a path or a URL. "
        f"[default: the config's [backends]{which}, else ~/.local/share/volsafe/backups]",
    )


def switch_option(flag: str, help: str) -> Any:
    """An on/off option, off unless given."""
    return typer.Option(False, flag, help=help)


def apply_global_options(state: State, *, host: str | None, helper_image: str | None, config: str | None, debug: bool) -> None:
    """Record global options in ``state``; an option not given (None, False) changes nothing."""
    if host is not None:
        state.host = host
    if helper_image is not None:
        state.helper_image_option = helper_image
    state.use_config(config)
    state.debug = state.debug or debug


def configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("volsafe: %(levelname)s: %(message)s" if not debug else "%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    # Hook output, containers stopped and restarted, crash recovery: what a user wants to see happen.
    for told in ("volsafe.hooks", "volsafe.quiesce", "volsafe.recovery", "volsafe.volumes", "volsafe.hosts", "volsafe.images"):
        logging.getLogger(told).setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        for noisy in ("botocore", "boto3", "urllib3", "docker", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    guard(handler, debug)  # no credentials in logs, even with --debug


_GLOBAL_PARAMETERS = {  # keyword of apply_global_options -> (parameter name, annotation, option)
    "host": ("global_host", Optional[str], host_option),
    "helper_image": ("global_helper_image", Optional[str], lambda: helper_image_option(from_env=False)),
    "config": ("global_config", Optional[str], config_option),
    "debug": ("global_debug", bool, debug_option),
}


def with_global_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``fn`` with the global options added to its parameters (for typer to declare).

    Before ``fn`` runs they are applied to the State in ``ctx.obj``, and --debug turns on debug
    logging; ``fn`` itself never sees them.
    """
    signature = inspect.signature(fn, eval_str=True)
    parameters = list(signature.parameters.values())
    context = next((p.name for p in parameters if p.annotation is typer.Context), None)
    if context is None:
        parameters.insert(0, inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context))
    for name, annotation, option in _GLOBAL_PARAMETERS.values():
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option(), annotation=annotation))

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        given = {key: kwargs.pop(name) for key, (name, _annotation, _option) in _GLOBAL_PARAMETERS.items()}
        ctx = kwargs[context] if context is not None else kwargs.pop("ctx")
        apply_global_options(ctx.obj, **given)
        if given["debug"]:
            configure_logging(True)
        return fn(*args, **kwargs)

    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not inspect.Parameter.empty}
    return command


class Command(TyperCommand):
    """A command whose usage line reads the usual way (``REF``, ``[VOLUME]``, ``[VOLUME...]``), and
    whose parse errors all name it, for the hint to its --help."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = (param.metavar or param.name or "").upper()
            if param.nargs != 1:
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
        return pieces

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click_exceptions.UsageError as exc:
            if exc.ctx is None:  # Click's parser raises some, e.g. an option missing its value, without one
                exc.ctx = ctx
            raise


def command(app: typer.Typer, name: str) -> Callable[[F], F]:
    """Register the decorated function as command ``name`` of ``app``, with the global options."""

    def register(fn: F) -> F:
        app.command(name, cls=Command)(with_global_options(fn))
        return fn

    return register


def max_age_seconds(text: str) -> float:
    """Return ``--max-age TEXT`` (``26h``, ``3d``, seconds) in seconds. Raises UsageError naming the option."""
    from backup.jobs.schedule import parse_duration
    from backup.errors import UsageError

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"invalid --max-age {text!r}: {exc}") from None
