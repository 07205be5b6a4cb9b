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


def _read_results(run_dir: Path):
    """The run's results table, checked for the columns scoring needs."""
    import pandas as pd

    table = run_dir / "results.parquet"
    if not table.is_file():
        raise UserError(f"{run_dir}: no results.parquet; give the folder of an `ecad-ray generate` run")
    frame = pd.read_parquet(table)
    missing = {"prompt", "image_path"} - set(frame.columns)
    if missing:
        raise UserError(f"{table}: missing column(s) {', '.join(sorted(missing))}")
    if frame.empty:
        raise UserError(f"{table}: no rows")
    return frame


def _load_images(run_dir: Path, paths):
    """uint8 NHWC 32x32 images of the listed paths (relative paths are under the run folder)."""
    import numpy as np
    from PIL import Image

    images = []
    for p in paths:
        path = Path(p) if Path(p).is_absolute() else run_dir / p
        if not path.is_file():
            raise UserError(f"{path}: image listed in results.parquet is missing")
        img = Image.open(path).convert("RGB")
        if img.size != (32, 32):
            img = img.resize((32, 32), Image.BILINEAR)
        images.append(np.asarray(img))
    return np.stack(images)


@demo_app.command("score")
def score(
    run_dir: Annotated[Path, typer.Argument(help="Folder of a generate run made from demo captions (holds results.parquet).")],
    judge_weights: Annotated[Path | None, typer.Option("--judge", help="Judge weights file (default: the shipped judge).")] = None,
    by: Annotated[str | None, typer.Option(help="Column to group by (default: `schedule` when the table has it).")] = None,
    fid_seed: Annotated[int, typer.Option(help="Seed of the real reference images drawn for the same captions.")] = 0,
) -> None:
    """Print colour, shape and position accuracy (by the judge) and the judge-feature FID of a run."""
    from ecad_ray.judge import JUDGE_PATH, features, frechet_distance, load_judge
    from ecad_ray.judge import score as judge_score
    from ecad_ray.shapes import parse_caption, render_captions

    frame = _read_results(run_dir)
    judge = load_judge(judge_weights or JUDGE_PATH)
    group = by or ("schedule" if "schedule" in frame.columns else None)
    if group is not None and group not in frame.columns:
        raise UserError(f"--by {group}: no such column in {run_dir / 'results.parquet'}")
    groups = frame.groupby(group, sort=False) if group else [("all", frame)]
    typer.echo(f"{'group':<24} {'images':>6} {'colour':>7} {'shape':>7} {'position':>8} {'size':>6} {'FID':>7}")
    for name, rows in groups:
        prompts = rows["prompt"].astype(str).tolist()
        images = _load_images(run_dir, rows["image_path"].tolist())
        fid = judge_score(prompts, images, judge)
        valid = [p for p in prompts if parse_caption(p) is not None]
        if fid.n_images == 0:
            raise UserError(f"{run_dir}: no prompt follows the demo caption grammar (see docs/demo.md)")
        fd = float("nan")
        if len(valid) >= 2:
            real = render_captions(valid, fid_seed).images
            gen = images[[parse_caption(p) is not None for p in prompts]]
            fd = frechet_distance(features(gen, judge), features(real, judge))
        typer.echo(f"{str(name):<24} {fid.n_images:>6} {fid.colour:>7.1%} {fid.shape:>7.1%} "
                   f"{fid.position:>8.1%} {fid.size:>6.1%} {fd:>7.2f}")
        if fid.n_skipped:
            typer.echo(f"  ({fid.n_skipped} prompts outside the demo grammar were not scored)")


def register(app: typer.Typer) -> None:
    """Attach `ecad-ray demo ...` to the root app."""
    app.add_typer(demo_app, name="demo")
