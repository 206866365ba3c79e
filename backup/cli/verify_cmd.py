"""``volsafe verify``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional
from urllib.parse import unquote, urlparse

import typer

from backup.actions.verify import restore_test, run_verify
from backup.cli.keys import identities_for, identity_option, passphrase_file_option
from backup.cli.output import print_json, print_table
from backup.cli.options import command, from_option
from backup.errors import NotFoundError, UsageError
from backup.config.locations import open_locations
from backup.archive.naming import parse_ref
from backup.progress import reporter_for
from backup.cli.hosts import host_choice, source_host_option


def verify(
    ctx: typer.Context,
    refs: Optional[List[str]] = typer.Argument(
        None, metavar="REF", help="VOLUME or VOLUME@latest (this host's newest backup of it), or a backup id as 'list' prints it."
    ),
    all_: bool = typer.Option(False, "--all", help="Verify every backup on the backends (also finds archives without manifests)."),
    from_: Optional[List[str]] = from_option("check"),
    restore_test_: bool = typer.Option(
        False, "--restore-test", help="Also restore each backup into a scratch volume (needs Docker) and compare its digest."
    ),
    identity: Optional[List[str]] = identity_option("encrypted backups"),
    passphrase_file: Optional[str] = passphrase_file_option("Passphrase (FILE's first line) for backups encrypted with one."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per backup; no progress bar."),
    source_host: Optional[List[str]] = source_host_option("verify"),
) -> None:
    """Check stored backups against their manifests: size, sha256, zstd, tar, entry count, content digest.

    Prints one line per backup; exits 1 if any check failed, or if --all finds no backup on a backend
    (a missing or empty directory, say an unmounted NAS, fails). Needs no Docker unless --restore-test.
    """
    state = ctx.obj
    configured = state.backends  # a config file given or found is read first: a broken one stops here
    if bool(refs) == all_:
        raise UsageError("give one or more REFs, or --all")
    parsed = [parse_ref(r) for r in refs] if refs else None
    identities = identities_for(state, identity, passphrase_file)
    progress = reporter_for(quiet=as_json)
    tester = None
    if restore_test_:
        tester = lambda backend, manifest: restore_test(  # noqa: E731
            state.docker, state.helper_image, backend, manifest, identities, progress
        )
    backends = open_locations(from_, configured)
    hosts = host_choice(state, source_host)
    verdicts = run_verify(
        backends, parsed, identities=identities, progress=progress, restore_test_with=tester, hosts=hosts,
    )
    if as_json:
        print_json(
            [
                {"id": str(v.backup_id), "backend": v.backend.url, "ok": v.ok, "checks": v.checks, "error": v.error}
                for v in verdicts
            ]
        )
    elif verdicts:
        rows = [
            ["ok" if v.ok else "FAILED", str(v.backup_id), v.backend.url, ", ".join(v.checks) if v.ok else v.error]
            for v in verdicts
        ]
        print_table(["RESULT", "ID", "BACKEND", "DETAILS"], rows)
    if all_:
        # A backend with nothing to verify is a failure: an unmounted NAS must not pass a cron check.
        checked = {v.backend.url for v in verdicts}
        empty = [_where(b) for b in backends if b.url not in checked]
        if empty:
            of = f" from host {', '.join(hosts.selected)}" if hosts.selected else ""
            raise NotFoundError(f"no backups{of} found in {', '.join(empty)}")
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


def _where(backend) -> str:
    """The backend's URL, and for a local directory that does not exist, say so (an unmounted disk)."""
    parsed = urlparse(backend.url)
    if parsed.scheme == "file" and not Path(unquote(parsed.path)).exists():
        return f"{backend.url} (no such directory: is it mounted?)"
    return backend.url


def register(app: typer.Typer) -> None:
    command(app, "verify")(verify)
