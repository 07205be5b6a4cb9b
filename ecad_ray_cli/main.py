"""Root of the `ecad-ray` CLI: registers each command module and reports user errors in one line."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ecad_ray.errors import UserError

app = typer.Typer(
    name="ecad-ray",
    help="Faster text-to-image generation (layer caching, token pruning) on Ray, and what it costs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Ray's own warnings and logs in the terminal.")] = False,
) -> None:
    """Faster text-to-image generation (layer caching, token pruning) on Ray, and what it costs."""
    if verbose:
        os.environ["ECAD_RAY_VERBOSE"] = "1"  # actors.pipeline.VERBOSE_ENV (not imported: keeps --help fast)


def _register() -> None:
    """Attach every command module. Each module exposes `register(app)`."""
    from ecad_ray_cli import benchmark, dataset, demo, embed, embeddings, generate, image, metrics, report, schedule, search, var

    for module in (generate, embeddings, schedule, benchmark, image, embed, metrics, report, var, demo, search, dataset):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry: run the app; a `UserError` becomes `error: ...` and exit code 1."""
    try:
        app()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
