"""`ecad-ray benchmark`: one embeddings store × every schedule in a folder (ECAD's generate_images);
with `--method`, those schedules and the peers side by side in one table and one plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecad_ray.config import GenerateConfig
from ecad_ray_cli.options import (
    Address,
    BatchSize,
    GuidanceScale,
    NumImagesPerPrompt,
    NumWorkers,
    StartSeed,
    ThreadsPerWorker,
)


def benchmark(
    input_embeddings: Annotated[Path, typer.Option(help="Embeddings store (from generate or embed) whose prompts to draw.")],
    output_dir: Annotated[Path, typer.Option(help="Writes <output-dir>/<schedule-name>/ per schedule + results.parquet "
                                                  "(with --method: methods.parquet + speed_vs_quality.png).")],
    schedule_dir: Annotated[Optional[Path], typer.Option(help="Folder of ECAD schedule JSON files (searched recursively).")] = None,
    method: Annotated[Optional[list[str]], typer.Option(
        help="A peer to score beside the schedules, e.g. pab:skip=2, fbc:threshold=0.1, faster:skip=2, "
             "taylorseer:interval=5, mag:threshold=0.06, cache-dit:F1B0,R0.12 (repeatable). Every method "
             "then runs on the same prompts and seeds in the model workers and lands in one table: speed, "
             "quality, fidelity to the uncached images, MACs (schedules).")] = None,
    objective: Annotated[str, typer.Option(help="With --method: the quality column (judge, imagereward, clip, "
                                                "psnr, ssim, lpips; see docs/search.md).")] = "judge",
    repeats: Annotated[int, typer.Option(help="With --method: time each method this many times, keep the fastest.")] = 1,
    model: Annotated[str, typer.Option(help="The model the embeddings were made with.")] = "demo",
    num_images_per_prompt: NumImagesPerPrompt = 1,
    batch_size: BatchSize = 4,
    guidance_scale: GuidanceScale = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt the embeddings were made with.")] = "",
    start_seed: StartSeed = 0,
    seed_step: Annotated[int, typer.Option(help="Seed increment between a prompt's images.")] = 1,
    num_workers: NumWorkers = 1,
    threads_per_worker: ThreadsPerWorker = 1,
    address: Address = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Regenerate images that already exist.")] = False,
) -> None:
    """Generate the same prompts and seeds under every schedule in --schedule-dir (and --method peers)."""
    if schedule_dir is None and not method:
        raise typer.BadParameter("give --schedule-dir, --method, or both", param_hint="--schedule-dir")
    base = GenerateConfig(
        model=model,
        output_dir=str(output_dir),
        input_embeddings=str(input_embeddings),
        num_images_per_prompt=num_images_per_prompt,
        batch_size=batch_size,
        guidance_scale=guidance_scale,
        negative_prompt=negative_prompt,
        start_seed=start_seed,
        seed_step=seed_step,
        num_workers=num_workers,
        threads_per_worker=threads_per_worker,
        address=address,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
    )
    if method:
        run_methods(base, str(schedule_dir) if schedule_dir else None, list(method), objective, repeats)
    else:
        run(base, str(schedule_dir))


def run_methods(base: GenerateConfig, schedule_dir: str | None, specs: list[str], objective: str, repeats: int) -> None:
    """Every schedule and peer in one table (patched in CLI tests)."""
    from actors.search import benchmark_methods
    from ecad_ray.search.compare import METHODS_FILE, PLOT_FILE, comparison_table

    rows = benchmark_methods(base, schedule_dir, specs, objective, repeats)
    typer.echo(comparison_table(rows))
    out = Path(base.output_dir)
    typer.echo(f"table: {out / METHODS_FILE}\nplot: {out / PLOT_FILE}")


def run(base: GenerateConfig, schedule_dir: str) -> None:
    """Run every schedule and print one line per schedule (patched in CLI tests)."""
    from actors.plan import run_benchmark

    for summary in run_benchmark(base, schedule_dir):
        typer.echo(f"{Path(summary.output_dir).name}: {summary.new_images} new, {summary.kept_images} kept, "
                   f"{summary.wall_seconds:.1f} s")
    typer.echo(f"table: {Path(base.output_dir) / 'results.parquet'}")


def register(app: typer.Typer) -> None:
    """Add `benchmark` to the root app."""
    app.command("benchmark")(benchmark)
