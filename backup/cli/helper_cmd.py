"""``volsafe helper-image``: provide the helper image without a registry."""

from __future__ import annotations

import typer

from backup.cli.options import command
from backup.docker.helper_image import DEFAULT_BUSYBOX, DEFAULT_GNU_TAR, LOCAL_IMAGE, build_helper_image

helper_app = typer.Typer(
    help="Manage the helper image that volsafe runs its containers from.", no_args_is_help=True, rich_markup_mode=None
)


@command(helper_app, "build")
def build(
    ctx: typer.Context,
    busybox: str = typer.Option(DEFAULT_BUSYBOX, "--busybox", metavar="PATH", help="Path of a statically linked busybox binary."),
    tag: str = typer.Option(LOCAL_IMAGE, "--tag", metavar="IMAGE", help="Name of the image to create."),
    gnu_tar: str = typer.Option(
        DEFAULT_GNU_TAR, "--gnu-tar", metavar="PATH",
        help="GNU tar (1.28 or later) to copy in with its libraries, for the fast local backup path; '' for none.",
    ),
) -> None:
    """Build a minimal helper image from a static busybox with 'docker import' (no registry needed).

    This host's GNU tar goes in too, when there is one: then backups from a daemon on this machine
    stream through a FIFO instead of Docker's archive endpoint (several times less CPU).
    volsafe uses volsafe-helper:latest automatically when it is present.
    """
    ctx.obj.config  # noqa: B018 -- a config file given or found is read first: a broken one stops here
    image = build_helper_image(ctx.obj.docker, busybox, tag, gnu_tar or None)
    typer.echo(image)


def register(app: typer.Typer) -> None:
    app.add_typer(helper_app, name="helper-image")
