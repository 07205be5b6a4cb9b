"""`ecad-ray var rl train|frontier|export`: train the RL pruning policy on Ray; compare every method;
write a policy in its shipping form."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecad_ray_cli.options import Address, NumWorkers

rl_app = typer.Typer(help="RL pruning controller: train a per-image, per-scale policy; compare methods.",
                     no_args_is_help=True)


def _budgets(text: str) -> tuple[float, ...]:
    from ecad_ray.errors import UserError
    from ecad_ray.var.rl.state import check_budget

    try:
        return tuple(check_budget(float(b)) for b in text.split(",") if b.strip())
    except ValueError:
        raise UserError(f"--flops-budget {text!r}: expected shares like 0.4 or 0.3,0.5,0.7") from None


@rl_app.command("train")
def train(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for policy.safetensors/.json, curves.parquet/.png.")],
    model: Annotated[str, typer.Option(help="The VAR model (as `var generate --model`).")] = "demo-var",
    episodes: Annotated[int, typer.Option(help="Images to generate in training (sampled plans), in total.")] = 2000,
    flops_budget: Annotated[str, typer.Option(help="Hard FLOPs budget(s) as shares of unpruned, e.g. 0.4 or 0.3,0.5,0.7 (one is drawn per group).")] = "0.5",
    flops_cost: Annotated[float, typer.Option(help="Reward lost per unit of FLOPs share.")] = 0.5,
    fidelity: Annotated[str, typer.Option(help="Fidelity to the unpruned image: ssim | psnr.")] = "ssim",
    actions: Annotated[str, typer.Option(help="Ratios the policy may pick (skip = skip the scale).")] = "0,0.25,0.5,0.75,skip",
    group_size: Annotated[int, typer.Option(help="Plans sampled per (condition, seed): GRPO's group.")] = 8,
    groups_per_update: Annotated[int, typer.Option(help="Groups per policy update.")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-3,
    checkpoint_every: Annotated[int, typer.Option(help="Updates between checkpoints.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of task order and plan sampling.")] = 0,
    num_workers: NumWorkers = 1,
    address: Address = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the checkpoint in --output-dir.")] = False,
) -> None:
    """Train a pruning policy with GRPO against live generation on Ray workers."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from actors.rl_train import run_rl_train
    from ecad_ray.var.checkpoints import load_var_model
    from ecad_ray.var.rl.trainer import TrainConfig

    config = TrainConfig(model=model, episodes=episodes, group_size=group_size, groups_per_update=groups_per_update,
                         budgets=_budgets(flops_budget), flops_cost=flops_cost, fidelity=fidelity, actions=actions,
                         lr=lr, checkpoint_every=checkpoint_every, seed=seed)
    pipe = load_var_model(model)  # fails fast in the driver
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} episodes"),
                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn()) as progress:
        bar = progress.add_task("train", total=episodes, stats="")

        def on_update(row):
            progress.update(bar, completed=min(row["episodes"], episodes), stats=(
                f"{row['episodes_per_s']:.1f} ep/s  reward {row['mean_reward']:.3f}  "
                f"fidelity {row['fidelity']:.3f}  FLOPs {row['flops_share']:.2f}"))

        doc = run_rl_train(pipe, config, output_dir, num_workers, address, resume, on_update=on_update)
    last = doc["curves"][-1] if doc["curves"] else {}
    typer.echo(f"policy -> {output_dir / 'policy.safetensors'} (update {doc['step']}, {doc['episodes']} episodes; "
               f"fidelity {last.get('fidelity', float('nan')):.3f} at FLOPs share {last.get('flops_share', float('nan')):.2f})")


@rl_app.command("frontier")
def frontier(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for frontier.parquet and frontier.png.")],
    model: Annotated[str, typer.Option(help="The VAR model.")] = "demo-var",
    policy: Annotated[Optional[Path], typer.Option(help="A trained policy.safetensors (RL rows at each --budgets).")] = None,
    budgets: Annotated[str, typer.Option(help="Budgets to run the policy at.")] = "0.3,0.4,0.5,0.7",
    uniform: Annotated[str, typer.Option(help="Uniform ratio levels.")] = "0.25,0.5,0.75",
    num_images_per_prompt: Annotated[int, typer.Option(help="Held-out seeds per condition.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Images per generation batch.")] = 16,
    num_conditions: Annotated[Optional[int], typer.Option(help="Only the first N held-out classes / captions (default: all).")] = None,
    lpips: Annotated[bool, typer.Option("--lpips/--no-lpips", help="LPIPS to the unpruned image (ImageNet AlexNet if cached, else a random backbone).")] = True,
) -> None:
    """Fidelity vs FLOPs of every method on held-out conditions and seeds: one table, one plot."""
    from ecad_ray.var.rl.frontier import run_frontier

    table = run_frontier(model, output_dir, policy, _budgets(budgets), _budgets(uniform), num_images_per_prompt,
                         batch_size, lpips, num_conditions)
    for row in table.to_pylist():
        extra = "" if row["lpips"] is None else f"  LPIPS {row['lpips']:.3f}"
        extra += "" if row["judge_accuracy"] is None else f"  judge {row['judge_accuracy']:.3f}"
        typer.echo(f"{row['method']:<22} FLOPs {row['flops_share']:.3f}  SSIM {row['ssim']:.3f}  "
                   f"PSNR {row['psnr']:.1f}{extra}  {row['seconds_per_image'] * 1e3:.2f} ms/image")
    typer.echo(f"LPIPS backbone: {table.schema.metadata[b'lpips_backbone'].decode()}")
    typer.echo(f"-> {output_dir / 'frontier.parquet'}, {output_dir / 'frontier.png'}")


@rl_app.command("export")
def export(
    policy: Annotated[Path, typer.Argument(help="A trained policy.safetensors (policy.json beside it).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the compact policy goes (.safetensors; its .json beside it).")],
) -> None:
    """Write a policy in its shipping form: weights only, config and final figures (a few tens of KB)."""
    from ecad_ray.var.rl.checkpoint import export_policy

    dest = export_policy(policy, output)
    typer.echo(f"policy -> {dest} ({dest.stat().st_size // 1024} KB) and {dest.with_suffix('.json').name}")
