"""``volsafe restore REF... `` and ``restore --project NAME``: several volumes under one quiesce.

Each volume is restored as ``backup.actions.restore.run_restore`` does (staged, all or nothing);
what this adds is choosing the set (a Compose project: every volume whose backups carry its label,
each from its newest backup) and holding the containers that use any existing target still once,
for the whole set, instead of once per volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backup.actions.restore import RestoreOutcome, refuse_if_in_use, run_restore
from backup.archive.catalog import locate_on_hosts, resolve_set
from backup.archive.hosts import HostChoice
from backup.archive.naming import Ref, parse_ref
from backup.docker.host import DockerHost
from backup.errors import NotFoundError, VolsafeError
from backup.progress import Reporter
from backup.quiesce.plan import PROJECT_LABEL
from backup.quiesce.session import QuiesceSession
from storage_backends import Backend, BackendError


@dataclass
class RestoreSet:
    """The outcome of restoring several volumes: what was restored, and what failed (REF -> one line)."""

    restored: list[RestoreOutcome] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def project_refs(backends: list[Backend], project: str, hosts: HostChoice) -> list[tuple[Backend, Ref]]:
    """Return, for every volume whose backups carry Compose project ``project`` (the volume label
    com.docker.compose.project, as recorded in each manifest), the backup its REF means and the
    backend that holds it, by volume name: as ``restore VOLUME`` chooses (this host's newest, else
    the only other host's, said on stderr; ``--source-host`` picks), among the project's backups.
    A volume is in the project when the chosen host's newest backup of it carries the label.
    Raises NotFoundError if there is none, UsageError when a volume's host must be chosen,
    BackendError if a backend cannot be listed."""
    chosen = resolve_set(backends, hosts, lambda m: m.volume_labels.get(PROJECT_LABEL) == project)
    if not chosen:
        where = ", ".join(b.url for b in backends)
        mine = f" from host {', '.join(hosts.selected)}" if hosts.selected else ""
        raise NotFoundError(f"no backups of Compose project {project!r}{mine} in {where}")
    return [(backend, parse_ref(str(manifest.backup_id))) for manifest, backend in chosen]


def locate_refs(backends: list[Backend], refs: list[str], hosts: HostChoice) -> list[tuple[Backend, Ref]]:
    """Return where each REF is, as ``restore REF`` finds it (this host's newest, see
    ``backup.archive.hosts``). Raises NotFoundError, UsageError."""
    return [locate_on_hosts(backends, parse_ref(ref), hosts)[:2] for ref in refs]


def run_restore_set(
    host: DockerHost,
    wanted: list[tuple[Backend, Ref]],
    *,
    helper_image: str,
    force: bool = False,
    quiesce: str = "none",
    progress: Reporter,
    identities: list | None = None,
    driver_opts: bool = False,
    bind_devices: tuple[str, ...] = (),
    keep_compose_labels: bool = False,
) -> RestoreSet:
    """Restore each backup in ``wanted`` into its own volume name, one after the other, inside one
    quiesce (``quiesce`` "stop" or "pause") of the containers that use any of the existing targets.

    Before anything is written or stopped: without ``quiesce``, a target used by a running container
    raises TargetInUse. A failing volume does not stop the others; it is in ``failures``. Raises
    VolsafeError if the containers cannot be quiesced (nothing is written then).
    """
    result = RestoreSet()
    existing = [v for v in dict.fromkeys(ref.volume for _, ref in wanted) if host.volume_exists(v)]
    if quiesce == "none":
        for volume in existing:
            refuse_if_in_use(host, volume)
    session = QuiesceSession(host, existing, mode=quiesce, action="restore", label_hooks=False)
    with session:
        for backend, ref in wanted:
            try:
                result.restored.append(
                    run_restore(
                        host, backend, ref, helper_image=helper_image, force=force, progress=progress, identities=identities,
                        driver_opts=driver_opts, bind_devices=bind_devices, session=session, keep_compose_labels=keep_compose_labels,
                    )
                )
            except (VolsafeError, BackendError) as exc:
                result.failures[str(ref.backup_id or ref.volume)] = str(exc)
    for problem in session.problems:
        result.failures.setdefault("containers", "")
        result.failures["containers"] = "; ".join(filter(None, [result.failures["containers"], problem]))
    return result
