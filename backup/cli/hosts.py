"""The options that select backups by the host they came from: --source-host (repeatable), --all-hosts."""

from __future__ import annotations

from typing import Any

import typer

from backup.archive.hosts import HostChoice, validate_host_name
from backup.cli.state import State
from backup.errors import UsageError


def _host_names(ctx, param, value):
    """Option callback: each --source-host must be a host name (an empty one is a usage error)."""
    for name in value or ():
        try:
            validate_host_name(name)
        except ValueError as exc:
            raise UsageError(f"--source-host: {exc}") from None
    return value


def source_host_option(what: str) -> Any:
    return typer.Option(
        None, "--source-host", metavar="NAME", callback=_host_names,
        help=f"Only {what} backups made on this host (repeatable), as 'list' shows in HOST.",
    )


def all_hosts_option() -> Any:
    return typer.Option(
        False, "--all-hosts",
        help="Prune the backups of every host sharing the store, and those that record no host, each host on its own.",
    )


def host_choice(state: State, selected) -> HostChoice:
    """Return how a VOLUME REF picks among hosts: the --source-host names, else this host first."""
    return HostChoice(this_host=state.this_host_if_known, selected=tuple(selected or ()))
