"""`ecad-ray dataset`: synthetic classification training sets from class names (nameonly's workflow).

This module owns the `dataset` group; each sub-command lives in its own module with a
`register(dataset_app)`.
"""

from __future__ import annotations

import typer

dataset_app = typer.Typer(
    name="dataset",
    help="Synthetic training sets from class names: prompts per class, then images.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Attach `ecad-ray dataset ...` to the root app."""
    from ecad_ray_cli import dataset_prompts

    dataset_prompts.register(dataset_app)
    app.add_typer(dataset_app, name="dataset")
