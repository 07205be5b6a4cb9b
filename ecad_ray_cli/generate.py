"""`ecad-ray generate`: prompts in, images + results table out, through the Ray Data plan."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
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


def generate(
    ctx: typer.Context,
    config_file: Annotated[
        Optional[Path], typer.Option("--config", help="YAML run config (configs/*.yaml); options given here win.")
    ] = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="A prompt (repeat for several).")] = None,
    prompt_file: Annotated[
        Optional[Path], typer.Option(help="Prompts: .txt one per line, or JSON list / {id: prompt}.")
    ] = None,
    model: Annotated[str, typer.Option(help="Registry name (demo, pixart-alpha-256, pixart-sigma-256, flux-dev), hub id or local folder.")] = "demo",
    output_dir: Annotated[Path, typer.Option(help="Run folder: images/, embeddings/, results.parquet, run.json.")] = Path("runs/demo"),
    num_images_per_prompt: NumImagesPerPrompt = 1,
    batch_size: BatchSize = 4,
    height: Annotated[Optional[int], typer.Option(help="Image height in pixels (default: the model's).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width in pixels (default: the model's).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the model's).")] = None,
    guidance_scale: GuidanceScale = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt for every image (PixArt).")] = "",
    start_seed: StartSeed = 0,
    seed_step: Annotated[int, typer.Option(help="Seed increment between a prompt's images.")] = 1,
    schedule: Annotated[Optional[Path], typer.Option(help="ECAD caching schedule (JSON) to apply.")] = None,
    transformer_weights: Annotated[
        Optional[Path], typer.Option(help="Transformer weights file (.safetensors or weights-only .pt/.pth, diffusers layout) replacing the model's own.")
    ] = None,
    input_embeddings: Annotated[
        Optional[Path], typer.Option(help="Reuse this embeddings store instead of encoding prompts.")
    ] = None,
    num_workers: NumWorkers = 1,
    min_workers: Annotated[
        Optional[int], typer.Option(help="Fewest generation actors: the pool starts with this many and grows to --num-workers while the cluster has room (default: --num-workers, a fixed pool).")
    ] = None,
    threads_per_worker: ThreadsPerWorker = 1,
    address: Address = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (the model's on GPU, fp32 on CPU), fp32, fp16 or bf16.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Regenerate images that already exist in --output-dir.")] = False,
    metrics: Annotated[
        Optional[str], typer.Option(help="Score images in the stream: comma list of clip,lpips,psnr,ssim,fid,imagereward.")
    ] = None,
    reference: Annotated[
        Optional[Path], typer.Option(help="Finished run with the reference images for psnr/ssim/lpips (same prompts and seeds).")
    ] = None,
    fid_ref: Annotated[Optional[str], typer.Option(help="FID reference: image folder or statistics .npz.")] = None,
    clip_model: Annotated[str, typer.Option(help="CLIP hub id or local folder for the clip metric.")] = "openai/clip-vit-base-patch32",
    inception: Annotated[Optional[str], typer.Option(help="Local inception-2015-12-05.pt for FID.")] = None,
    fid_extractor: Annotated[str, typer.Option(help="FID features: inception, pixels or module:function.")] = "inception",
    lpips_random_backbone: Annotated[bool, typer.Option(help="Random LPIPS backbone (smoke runs only).")] = False,
) -> None:
    """Generate images for prompts with a text-to-image model, streamed through Ray Data."""
    options = dict(
        model=model,
        output_dir=str(output_dir),
        prompts=tuple(prompt or ()),
        prompt_file=str(prompt_file) if prompt_file else None,
        num_images_per_prompt=num_images_per_prompt,
        batch_size=batch_size,
        height=height,
        width=width,
        steps=steps,
        guidance_scale=guidance_scale,
        negative_prompt=negative_prompt,
        start_seed=start_seed,
        seed_step=seed_step,
        schedule=str(schedule) if schedule else None,
        transformer_weights=str(transformer_weights) if transformer_weights else None,
        input_embeddings=str(input_embeddings) if input_embeddings else None,
        num_workers=num_workers,
        min_workers=min_workers,
        threads_per_worker=threads_per_worker,
        address=address,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
        metrics=metrics_config(metrics, clip_model, inception, fid_extractor, lpips_random_backbone),
        reference=str(reference) if reference else None,
        fid_ref=fid_ref,
    )
    if config_file:
        given = {name for name in ctx.params if ctx.get_parameter_source(name).name != "DEFAULT"}
        options = merge_config_file(config_file, options, given)
    run(GenerateConfig(**options))


def metrics_config(names, clip_model, inception, fid_extractor, lpips_random_backbone):
    """The metric actors' configuration, or None when no --metrics were asked for."""
    if not names:
        return None
    from ecad_ray.metrics.config import MetricsConfig, parse_metric_names

    return MetricsConfig(
        metrics=parse_metric_names(names),
        clip_model=clip_model,
        inception_path=inception,
        fid_extractor=fid_extractor,
        lpips_random_backbone=lpips_random_backbone,
    )


def merge_config_file(path: Path, options: dict, given: set[str]) -> dict:
    """Options from a YAML run config, overridden by those given on the command line."""
    from ecad_ray.config import load_config_file

    from_file = load_config_file(path)
    merged = dict(options)
    for key, value in from_file.items():
        cli_name = {"prompts": "prompt"}.get(key, key)
        if cli_name not in given:
            merged[key] = tuple(value) if key == "prompts" else value
    return merged


def run(config: GenerateConfig) -> None:
    """Run the plan with a progress bar and print where the outputs went (patched in CLI tests)."""
    from rich.console import Console
    from rich.progress import Progress

    from actors.plan import run_generate

    console = Console(stderr=True)
    counts = [0, None]  # images written so far, images this run makes
    with exit_at_second_interrupt(), Progress(console=console, transient=True) as bar:
        task = bar.add_task("generating", total=None)

        def progress(done: int, total: int) -> None:
            counts[:] = [done, total]
            bar.update(task, completed=done, total=total)

        try:
            summary = run_generate(config, progress)
        except KeyboardInterrupt:
            bar.stop()
            of = f" of {counts[1]}" if counts[1] is not None else ""
            console.print(f"interrupted: {counts[0]}{of} new image(s) written to {config.output_dir}/images; "
                          f"run the same command again to resume: {shlex.join(['ecad-ray', *sys.argv[1:]])}",
                          soft_wrap=True)
            raise typer.Exit(130) from None
    console.print(
        f"{summary.new_images} new image(s), {summary.kept_images} kept, in {summary.wall_seconds:.1f} s -> "
        f"{summary.output_dir}/images; table: {summary.results_path}",
        soft_wrap=True,
    )


@contextlib.contextmanager
def exit_at_second_interrupt():
    """The first Ctrl-C stops the run cleanly (Ray shuts down, the summary line is printed); a
    second one, while that is under way, exits at once."""
    def first(signum, frame):
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def register(app: typer.Typer) -> None:
    """Add `generate` to the root app."""
    app.command("generate")(generate)
