"""`ecad-ray var generate|eval|spectra|train`: VAR next-scale generation with per-scale pruning.

A `var generate` run folder is scored like any run: `ecad-ray metrics`, `ecad-ray report`,
`ecad-ray demo score`; `var eval` is the original-vs-pruned table over those same metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecad_ray.errors import UserError
from ecad_ray_cli.options import (
    Address,
    BatchSize,
    GuidanceScale,
    NumImagesPerPrompt,
    NumWorkers,
    StartSeed,
    old_spelling,
    resolve_alias,
)

var_app = typer.Typer(help="VAR next-scale generation with FastVAR-style per-scale token pruning.",
                      no_args_is_help=True)


def _parse_classes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--classes {text!r}: expected comma-separated class labels, e.g. 0,3,7") from None


@var_app.command("generate")
def generate(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for items, config_all.json, metadata.json.")],
    model: Annotated[str, typer.Option(help="demo-var | random:<preset> | file.safetensors | FoundationVision var_d16.pth or folder | infinity-tiny | infinity-2b | random:infinity-2b | infinity_2b_reg.pth.")] = "demo-var",
    vae: Annotated[Optional[str], typer.Option(help="FoundationVision tokenizer (vae_ch160v4096z32.pth, infinity_vae_d32reg.pth) for a .pth --model.")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class labels, e.g. 0,3,7 (default, without --prompt-file: every class, or the demo captions for a text model).")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Prompts: one per line, or JSON {id: {\"prompt\": ...}}.")] = None,
    pruning_scales: Annotated[Optional[str], typer.Option(help="Ratios by map width, e.g. '8:0.5,16:1.0' (>= 1 skips the scale).")] = None,
    controller: Annotated[Optional[str], typer.Option(help="default (seed tail pattern 0.3,0.4,1,1,0.8,1) | none | rl:POLICY.safetensors[@BUDGET] (a trained policy, see `var rl train`).")] = None,
    num_images_per_prompt: NumImagesPerPrompt = 1,
    start_seed: StartSeed = 0,
    guidance_scale: GuidanceScale = None,
    top_k: Annotated[Optional[int], typer.Option(help="Top-k sampling, 0 = off (default: the model's).")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Top-p sampling, 0 = off (default: the model's).")] = None,
    prune_layers: Annotated[Optional[str], typer.Option(help="Layers that prune, start:end (default: FastVAR's share, 3/32 on).")] = None,
    save_intermediates: Annotated[bool, typer.Option("--save-intermediates", help="Write summed_codes/ and rescale_codes/ per scale.")] = False,
    spectra: Annotated[bool, typer.Option("--spectra", help="Write DFT spectra .npy (pixel and latent) per scale.")] = False,
    batch_size: BatchSize = 8,
    num_workers: NumWorkers = 1,
    address: Address = None,
    device: Annotated[str, typer.Option(help="Torch device of each generator.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="Infinity's block precision: auto (bf16 on a GPU, else fp32) | fp32 | bf16.")] = "auto",
    images_per_condition: Annotated[Optional[int], old_spelling("--images-per-condition", "--num-images-per-prompt")] = None,
    seed: Annotated[Optional[int], old_spelling("--seed", "--start-seed")] = None,
    cfg: Annotated[Optional[float], old_spelling("--cfg", "--guidance-scale")] = None,
    num_actors: Annotated[Optional[int], old_spelling("--num-actors", "--num-workers")] = None,
) -> None:
    """Generate images through the Ray Data plan, optionally pruned per scale."""
    from ecad_ray.var.run import VarRunOptions, parse_layer_range, plan_var_run

    num_images_per_prompt = resolve_alias(num_images_per_prompt, 1, images_per_condition, "--images-per-condition",
                                          "--num-images-per-prompt")
    start_seed = resolve_alias(start_seed, 0, seed, "--seed", "--start-seed")
    guidance_scale = resolve_alias(guidance_scale, None, cfg, "--cfg", "--guidance-scale")
    num_workers = resolve_alias(num_workers, 1, num_actors, "--num-actors", "--num-workers")
    if pruning_scales and controller:
        raise UserError("--pruning-scales / --controller: give one of them, not both")
    if controller not in (None, "default", "none") and not controller.startswith("rl:"):
        raise UserError(f"--controller {controller}: choose default or none, or rl:POLICY.safetensors (or use --pruning-scales)")
    if batch_size < 1 or num_workers < 1:
        raise UserError("--batch-size / --num-workers: must be >= 1")
    spec = pruning_scales or controller or "none"
    options = VarRunOptions(model=model, vae=vae, controller=spec, cfg=guidance_scale, top_k=top_k, top_p=top_p,
                            prune_layers=parse_layer_range(prune_layers), save_intermediates=save_intermediates,
                            spectra=spectra, device=device, dtype=dtype)
    rows = plan_var_run(options, _parse_classes(classes), prompt_file, num_images_per_prompt, start_seed)
    configs = launch_generate(rows, options, output_dir, num_workers, batch_size, address)
    secs = sum(c["seconds_per_image"] for c in configs) / max(len(configs), 1)
    typer.echo(f"{len(configs)} images -> {output_dir} (controller {spec}; {secs:.3f} s/image in the generators)")


def launch_generate(rows, options, output_dir, num_workers, batch_size, address=None):
    """Run the Ray plan (a seam the CLI tests patch)."""
    from actors.var_plan import run_var_generate

    return run_var_generate(rows, options, output_dir, num_actors=num_workers, batch_size=batch_size,
                            address=address)


@var_app.command("eval")
def eval_cmd(
    orig: Annotated[Path, typer.Option(help="The unpruned run (a `var generate` folder): the reference.")],
    fast: Annotated[Path, typer.Option(help="A pruned run of the same conditions and seeds.")],
    rl: Annotated[Optional[Path], typer.Option(help="An RL-controlled run (optional).")] = None,
    metrics: Annotated[str, typer.Option("--metrics", help="Comma list (as `ecad-ray metrics`).")] = "psnr,ssim,lpips",
    lpips_backbone: Annotated[Optional[str], typer.Option(help="torchvision ImageNet weights file for the LPIPS backbone.")] = None,
    lpips_random_backbone: Annotated[bool, typer.Option(help="Random LPIPS backbone (the default when ImageNet weights are absent).")] = False,
    batch_size: Annotated[int, typer.Option(help="Images scored per batch.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Original vs pruned: PSNR / SSIM / LPIPS against --orig, seconds per image and speedup, one
    row per run (scored by the shared metrics: each run gets its metrics.parquet / summary.parquet)."""
    from ecad_ray.metrics.compare import COMPARE_COLUMNS, compare_runs, lpips_backbone_note
    from ecad_ray.metrics.config import MetricsConfig, parse_metric_names
    from ecad_ray.models.loading import resolve_device

    config = MetricsConfig(metrics=parse_metric_names(metrics), device=str(resolve_device(device)),
                           lpips_backbone=lpips_backbone, lpips_random_backbone=lpips_random_backbone)
    config, backbone = lpips_backbone_note(config)
    runs = {"fast": fast} | ({"rl": rl} if rl else {})
    rows, errors = compare_runs(orig, runs, config, batch_size)
    _print_table(rows, COMPARE_COLUMNS, f"VAR eval vs {orig}")
    if config.wants("lpips"):
        typer.echo(f"LPIPS backbone: {backbone}")
    typer.echo("per-image metrics -> " + ", ".join(str(p / "metrics.parquet") for p in runs.values()))
    if errors:
        raise UserError(f"{len(errors)} metric(s) could not run: " + "; ".join(errors.values()))


def _print_table(rows: list[dict], columns, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in ("set", "pruning") else "right")
    for row in rows:
        table.add_row(*[_fmt(row[c]) for c in columns])
    Console(width=140).print(table)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


@var_app.command("spectra")
def spectra_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Output folder of `var generate --spectra`.")],
    output_dir: Annotated[Optional[Path], typer.Option(help="Where PNGs go (default: <run>/spectra_plots).")] = None,
) -> None:
    """Plot the saved DFT spectra (one PNG per item and domain)."""
    from ecad_ray.var.spectra import plot_run

    written = plot_run(run_dir, output_dir)
    typer.echo(f"{len(written)} plots -> {written[0].parent}")


@var_app.command("train")
def train_cmd(
    model: Annotated[str, typer.Option(help="Which shipped demo to train: demo-var (shapes captions, text) or demo-var-digits.")] = "demo-var",
    output: Annotated[Optional[Path], typer.Option(help="Where the trained safetensors goes (default: the shipped file of --model).")] = None,
    vq_steps: Annotated[Optional[int], typer.Option(help="Tokenizer updates (default: the model's recipe).")] = None,
    var_steps: Annotated[Optional[int], typer.Option(help="Transformer updates (default: the model's recipe).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per update (default: the model's recipe).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of data order and initial weights.")] = 0,
    threads: Annotated[Optional[int], typer.Option(
        help="Torch threads (default: the recipe's). A recipe that pins its tokenizer's threads keeps them: "
             "demo-var trains its tokenizer at 1, for reproducible weights.")] = None,
) -> None:
    """Train a shipped demo VAR on a CPU: tokenizer, then transformer (demo-var: ~40 min on 2 cores)."""
    from ecad_ray.var.train import train_recipe

    train_recipe(model, output, vq_steps=vq_steps, var_steps=var_steps, batch_size=batch_size, seed=seed,
                 threads=threads, log=typer.echo)


def register(app: typer.Typer) -> None:
    """Attach `var` to the root CLI."""
    app.add_typer(var_app, name="var")


from ecad_ray_cli.var_rl import rl_app  # noqa: E402  (`var rl train|frontier`)

var_app.add_typer(rl_app, name="rl")
