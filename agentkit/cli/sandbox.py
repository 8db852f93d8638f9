"""`agentkit sandbox build`: build the code sandbox image locally, without a registry."""

from __future__ import annotations

from typing import Annotated

import typer

from agentkit.cli._app import EXIT_FAILED, err_console, fail, out, sandbox_app, user_errors
from agentkit.errors import AgentkitError


@sandbox_app.command("build")
def sandbox_build(
    python_packages: Annotated[str, typer.Option(
        help="Extra Python packages for the image, comma-separated (e.g. numpy,pandas).")] = "",
    force: Annotated[bool, typer.Option(help="Rebuild even if the image exists.")] = False,
) -> None:
    """Build the sandbox image locally and print its tag. Exit codes: 0 built, 1 build failed,
    2 missing prerequisite (the message says what to install)."""
    try:
        from agentkit.sandboxes.image import build_image
    except ImportError as exc:
        fail(f"the sandbox image builder is not available in this install ({exc})")
    console = err_console()
    packages = [p.strip() for p in python_packages.split(",") if p.strip()]
    try:
        with user_errors():
            tag = build_image(extra_packages=packages, force=force,
                              log=lambda line: console.print(line, markup=False))
    except AgentkitError as exc:
        fail(str(exc), EXIT_FAILED)
    out(str(tag))


