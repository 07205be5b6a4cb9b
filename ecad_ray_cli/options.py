"""The CLI's one vocabulary: each concept has one option name, declared here once.

Commands that take the same thing use the same type (`--num-workers`, `--batch-size`,
`--start-seed`, `--num-images-per-prompt`, `--output-dir`, `--guidance-scale`, ...), so a user
who learnt one command knows the others. Spellings that earlier versions used stay accepted
as hidden aliases (`old_spelling`), resolved by `resolve_alias`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from ecad_ray.errors import UserError

T = TypeVar("T")

NumWorkers = Annotated[int, typer.Option("--num-workers", help="Model actors in the Ray pool, at most (one GPU each when GPUs exist).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per model call on one worker.")]
StartSeed = Annotated[int, typer.Option("--start-seed", help="Seed of each prompt's (or class's) first image; the next images count up from it.")]
NumImagesPerPrompt = Annotated[int, typer.Option("--num-images-per-prompt", help="Images per prompt (or class).")]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Run folder for the outputs.")]
GuidanceScale = Annotated[Optional[float], typer.Option("--guidance-scale", help="Classifier-free guidance scale (default: the model's).")]
ThreadsPerWorker = Annotated[int, typer.Option("--threads-per-worker", help="Torch threads per actor on CPU.")]
Address = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: start a local Ray).")]


def old_spelling(name: str, now: str):
    """A hidden option for a spelling an earlier version used (`--num-actors` for `--num-workers`)."""
    return typer.Option(name, hidden=True, help=f"Old spelling of {now}.")


def resolve_alias(value: T, default: T, old: T | None, old_name: str, new_name: str) -> T:
    """The value the user meant: the new option's, or the old spelling's when only that was given."""
    if old is None:
        return value
    if value != default and value != old:
        raise UserError(f"{new_name} {value} and {old_name} {old}: the same option twice with different values")
    return old
