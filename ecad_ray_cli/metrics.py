"""`ecad-ray metrics RUN_DIR`: score a finished `generate` or `var generate` run (or a folder of
runs) and write metrics.parquet + summary.parquet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ecad_ray.errors import UserError


def register(app: typer.Typer) -> None:
    """Attach the `metrics` command."""
    app.command("metrics")(metrics)


def metrics(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `ecad-ray generate` or `var generate`, or a folder of runs.")],
    metrics: Annotated[str, typer.Option("--metrics", help="Comma list of clip,lpips,psnr,ssim,fid,imagereward.")] = "clip,psnr,ssim,lpips,fid",
    reference: Annotated[Path | None, typer.Option(help="Run holding the reference images (default: RUN_DIR itself).")] = None,
    reference_schedule: Annotated[str | None, typer.Option(help="The all-recompute schedule (default: the only one or the one named baseline/none/...).")] = None,
    reference_pruning: Annotated[str | None, typer.Option(help="The unpruned VAR pruning (default: the only one or none).")] = None,
    fid_ref: Annotated[str | None, typer.Option(help="FID reference: folder of images (subfolders = categories) or stats .npz (default: the reference schedule's images).")] = None,
    clip_model: Annotated[str, typer.Option(help="CLIP hub id or local folder.")] = "openai/clip-vit-base-patch32",
    imagereward_model: Annotated[str, typer.Option(help="ImageReward model name or checkpoint file.")] = "ImageReward-v1.0",
    imagereward_root: Annotated[str | None, typer.Option(help="Folder with ImageReward's files (ImageReward.pt, med_config.json).")] = None,
    lpips_net: Annotated[str, typer.Option(help="LPIPS backbone: alex, vgg or squeeze.")] = "alex",
    lpips_backbone: Annotated[str | None, typer.Option(help="torchvision ImageNet weights file for the LPIPS backbone.")] = None,
    lpips_random_backbone: Annotated[bool, typer.Option(help="Random LPIPS backbone (tests / smoke runs only).")] = False,
    inception: Annotated[str | None, typer.Option(help="Local inception-2015-12-05.pt for FID (default /tmp, where clean-fid looks).")] = None,
    fid_extractor: Annotated[str, typer.Option(help="FID features: inception, pixels (tiny, tests) or module:function.")] = "inception",
    fid_cache: Annotated[Path | None, typer.Option(help="Folder caching reference statistics (default ~/.cache/ecad-ray/fid_stats).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images scored per batch.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Score every image of RUN_DIR; a metric that cannot run is reported and left null."""
    from rich.console import Console

    from ecad_ray.metrics.config import MetricsConfig, parse_metric_names
    from ecad_ray.metrics.evaluate import evaluate_run
    from ecad_ray.metrics.report import read_summary, summary_rich_table
    from ecad_ray.models.loading import resolve_device

    config = MetricsConfig(
        metrics=parse_metric_names(metrics),
        device=str(resolve_device(device)),
        clip_model=clip_model,
        imagereward_model=imagereward_model,
        imagereward_root=imagereward_root,
        lpips_net=lpips_net,
        lpips_backbone=lpips_backbone,
        lpips_random_backbone=lpips_random_backbone,
        inception_path=inception,
        fid_extractor=fid_extractor,
    )
    result = evaluate_run(
        run_dir, config, reference, reference_schedule, fid_ref, batch_size, fid_cache, reference_pruning
    )
    console = Console()
    console.print(summary_rich_table(read_summary(run_dir), title=f"{run_dir}"))
    typer.echo(f"wrote {result.metrics_path} and {result.summary_path}")
    if result.fid_source:
        typer.echo(f"FID reference: {result.fid_source}")
    for message in result.load_errors.values():
        print(f"error: {message}", file=sys.stderr)
    if result.load_errors:
        raise UserError(
            f"{len(result.load_errors)} metric(s) could not run ({', '.join(result.load_errors)}); "
            "the tables hold every other metric"
        )
