"""Which host a backup came from, and choosing among hosts: pure rules over manifests.

Every backup records the host it came from (the manifest's ``source.hostname``, ``source_host`` in
JSON): the Docker daemon's ``Name`` (the host's name, even when volsafe runs in a container), unless
``$VOLSAFE_HOST_NAME`` or the config's ``[docker] host_name`` names it otherwise.

A manifest with an empty host name (none recorded) belongs to no host: it is listed, verified and
restorable like any other, but ``prune`` and a job's retention (which touch only this host's
backups unless told otherwise) remove it only with ``--all-hosts``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

from backup.errors import DockerUnavailable, NotFoundError, UsageError

log = logging.getLogger("volsafe.hosts")  # shown on stderr: which host's backup a REF came to mean
HOST_NAME_ENV = "VOLSAFE_HOST_NAME"
UNRECORDED = "(unrecorded)"  # how a backup without a host name is shown
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

T = TypeVar("T")


def validate_host_name(name: str) -> str:
    """Return ``name`` if it is a usable host name (letters, digits, '_', '.', '-'; at most 255);
    raise ValueError if not."""
    if not isinstance(name, str) or len(name) > 255 or not _HOST_NAME.fullmatch(name):
        raise ValueError(f"invalid host name {name!r}: use letters, digits, '_', '.' and '-', starting with a letter or digit")
    return name


def configured_host_name(config_name: str | None, environ: Mapping[str, str]) -> str | None:
    """Return the host name set by ``$VOLSAFE_HOST_NAME`` (wins) or the config's ``[docker] host_name``,
    or None when neither is set (then the daemon's Name is used). Raises UsageError for a bad one."""
    given = environ.get(HOST_NAME_ENV)
    if given:
        try:
            return validate_host_name(given)
        except ValueError as exc:
            raise UsageError(f"${HOST_NAME_ENV}: {exc}") from None
    return config_name or None


def shown(host: str) -> str:
    """Return a recorded host name as tables show it (``(unrecorded)`` for none)."""
    return host or UNRECORDED


@dataclass(frozen=True)
class HostChoice:
    """How ``VOLUME``/``VOLUME@latest`` picks among the hosts whose backups are stored.

    ``this_host`` returns the running host's name (asked only when needed; None if it cannot be
    told); ``selected`` are the ``--source-host`` names (empty: none given).
    """

    this_host: Callable[[], str | None] = field(default=lambda: None)
    selected: tuple[str, ...] = ()

    def admits(self, host: str) -> bool:
        """Return whether a backup recorded as from ``host`` may be chosen at all."""
        return not self.selected or host in self.selected


def choose_newest(found: Sequence[tuple[Any, T]], volume: str, choice: HostChoice, where: str) -> tuple[Any, T]:
    """Return the (manifest, place) of the backup ``VOLUME`` means among ``found`` (manifests of
    that volume, each with where it is stored).

    With ``--source-host`` names: the newest backup from those hosts. Else this host's newest; when
    this host has none and exactly one other host has some, that host's newest (said on stderr);
    when several other hosts have some, UsageError naming them and --source-host. Raises
    NotFoundError when nothing fits. ``where`` names the backends for messages.
    """

    def newest(items):
        return max(items, key=lambda f: (f[0].created, f[0].backup_id.stamp))  # max keeps the first of equals

    if choice.selected:
        pool = [f for f in found if f[0].source_hostname in choice.selected]
        if not pool:
            others = sorted({shown(f[0].source_hostname) for f in found})
            also = f" (there are backups from {', '.join(others)})" if others else ""
            raise NotFoundError(
                f"no backups of volume {volume!r} from host {', '.join(choice.selected)} in {where}{also}"
            )
        return newest(pool)
    if not found:
        raise NotFoundError(f"no backups of volume {volume!r} in {where}")
    by_host: dict[str, list] = {}
    for item in found:
        by_host.setdefault(item[0].source_hostname, []).append(item)
    this = choice.this_host()
    if this is not None and this in by_host:
        return newest(by_host[this])
    others = sorted(by_host)
    here = f"this host ({this})" if this is not None else "this host (its name is unknown)"
    if len(others) == 1:
        chosen = newest(by_host[others[0]])
        log.info(
            "no backup of volume %s from %s; using host %s's newest: %s",
            volume, here, shown(others[0]), chosen[0].backup_id,
        )
        return chosen
    names = ", ".join(shown(h) for h in others)
    raise UsageError(
        f"no backup of volume {volume!r} from {here}, and hosts {names} have some: "
        f"choose one with --source-host NAME (or give a backup id as 'volsafe list' prints it)"
    )


def host_filter(selected: Sequence[str], all_hosts: bool, this_host: Callable[[], str]) -> tuple[str, ...] | None:
    """Return the hosts ``prune`` (and a job's retention) may touch: every host (None) with
    ``--all-hosts``, the ``--source-host`` names, else this host only. Raises UsageError for both."""
    if all_hosts and selected:
        raise UsageError("give --source-host or --all-hosts, not both")
    if all_hosts:
        return None
    if selected:
        return tuple(selected)
    try:
        this = this_host()
    except DockerUnavailable as exc:
        raise DockerUnavailable(
            f"{exc}; prune touches this host's backups only, and without the daemon its name is unknown: "
            f"set ${HOST_NAME_ENV} or [docker] host_name, or give --source-host or --all-hosts"
        ) from None
    if not this:
        raise UsageError(f"this host's Docker daemon reports no name: set ${HOST_NAME_ENV}, or give --source-host or --all-hosts")
    return (this,)
