"""`ecad-ray demo train` and `ecad-ray demo score`: the built-in demo model's training and judging."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecad_ray.errors import UserError

demo_app = typer.Typer(help="The built-in demo model: train it, score what it generates.", no_args_is_help=True)


@demo_app.command("train")
def train(
    out: Annotated[Path | None, typer.Option(help="Folder for weights.safetensors and judge.safetensors "
                                             "(default: the package's demo_assets, i.e. what --model demo loads).")] = None,
    steps: Annotated[int | None, typer.Option(help="Transformer + text-encoder training steps "
                                              "(default: the recipe's, which made the shipped weights).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data, initialisation and batches.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    skip_judge: Annotated[bool, typer.Option(help="Keep the existing judge; train only the generator.")] = False,
    init_from: Annotated[Path | None, typer.Option(help="Continue from this weights file (its VAE is kept; "
                                                   "text encoder + transformer train --steps more).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of the text encoder + transformer "
                                             "(default: the recipe's).")] = None,
) -> None:
    """Train the demo judge, VAE, text encoder and transformer from scratch: with no options this
    is the command that made the shipped weights (about 45 min on an idle 2-core CPU)."""
    from ecad_ray.models.demo import ASSETS
    from ecad_ray.models.demo_train import TrainConfig, train_demo

    recipe = TrainConfig()
    steps = recipe.dit_steps if steps is None else steps
    lr = recipe.dit_lr if lr is None else lr
    if steps < 1:
        raise UserError(f"--steps {steps}: must be at least 1")
    if threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if init_from is not None and not init_from.is_file():
        raise UserError(f"--init-from {init_from}: no such weights file")
    if lr <= 0:
        raise UserError(f"--lr {lr}: must be positive")
    cfg = TrainConfig(seed=seed, dit_steps=steps, threads=threads, skip_judge=skip_judge,
                      checkpoint_every=min(recipe.checkpoint_every, steps), dit_lr=lr,
                      init_from=str(init_from) if init_from else None)
    timings = train_demo(out or ASSETS, cfg, log=lambda m: typer.echo(m))
    typer.echo("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


@demo_app.command("score")
def score(
    run_dir: Annotated[Path, typer.Argument(help="A `generate` or `var generate` run made from demo captions, or a folder of such runs.")],
    judge_weights: Annotated[Path | None, typer.Option("--judge", help="Judge weights file (default: the shipped judge).")] = None,
    by: Annotated[str | None, typer.Option(help="results.parquet column to group by (default: the setting: schedule or pruning).")] = None,
    fid_seed: Annotated[int, typer.Option(help="Seed of the real reference images drawn for the same captions.")] = 0,
) -> None:
    """Print colour, shape and position accuracy (by the judge) and the judge-feature FID of a run."""
    from ecad_ray.metrics.demo_score import score_run

    scores = score_run(run_dir, judge_weights, by, fid_seed)
    typer.echo(f"{'group':<24} {'images':>6} {'colour':>7} {'shape':>7} {'position':>8} {'size':>6} {'FID':>7}")
    for s in scores:
        f = s.fidelity
        typer.echo(f"{s.group:<24} {f.n_images:>6} {f.colour:>7.1%} {f.shape:>7.1%} "
                   f"{f.position:>8.1%} {f.size:>6.1%} {s.fid:>7.2f}")
        if f.n_skipped:
            typer.echo(f"  ({f.n_skipped} prompts outside the demo grammar were not scored)")


def register(app: typer.Typer) -> None:
    """Attach `ecad-ray demo ...` to the root app."""
    app.add_typer(demo_app, name="demo")
