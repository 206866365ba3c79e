"""``volsafe helper-image``: provide the helper image without a registry."""

from __future__ import annotations

import typer

from backup.helper_image import DEFAULT_BUSYBOX, LOCAL_IMAGE, build_helper_image

helper_app = typer.Typer(
    help="Manage the helper image that volsafe runs its containers from.", no_args_is_help=True, rich_markup_mode=None
)


@helper_app.command("build")
def build(
    ctx: typer.Context,
    busybox: str = typer.Option(DEFAULT_BUSYBOX, "--busybox", help="Path of a statically linked busybox binary."),
    tag: str = typer.Option(LOCAL_IMAGE, "--tag", help="Name of the image to create."),
) -> None:
    """Build a minimal helper image from a static busybox with 'docker import' (no registry needed).

    volsafe uses volsafe-helper:latest automatically when it is present.
    """
    image = build_helper_image(ctx.obj.docker, busybox, tag)
    typer.echo(image)


def register(app: typer.Typer) -> None:
    app.add_typer(helper_app, name="helper-image")
