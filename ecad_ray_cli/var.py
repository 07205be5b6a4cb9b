"""`ecad-ray var generate|eval|spectra|train`: VAR next-scale generation with per-scale pruning."""

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
    model: Annotated[str, typer.Option(help="demo-var | random:<preset> | file.safetensors | FoundationVision var_d16.pth or folder.")] = "demo-var",
    vae: Annotated[Optional[str], typer.Option(help="FoundationVision tokenizer (vae_ch160v4096z32.pth) for a .pth --model.")] = None,
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
    images_per_condition: Annotated[Optional[int], old_spelling("--images-per-condition", "--num-images-per-prompt")] = None,
    seed: Annotated[Optional[int], old_spelling("--seed", "--start-seed")] = None,
    cfg: Annotated[Optional[float], old_spelling("--cfg", "--guidance-scale")] = None,
    num_actors: Annotated[Optional[int], old_spelling("--num-actors", "--num-workers")] = None,
) -> None:
    """Generate images through the Ray Data plan, optionally pruned per scale."""
    from ecad_ray.var.checkpoints import load_var_model
    from ecad_ray.var.run import VarRunOptions, build_rows, parse_layer_range, read_prompt_file

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
    pipe = load_var_model(model, vae)  # fails fast in the driver, before Ray actors start
    prompts = read_prompt_file(prompt_file) if prompt_file else None
    labels = _parse_classes(classes)
    if labels is None and prompts is None:
        labels, prompts = default_conditions(pipe)
    rows = build_rows(labels, prompts, num_images_per_prompt, start_seed)
    options = VarRunOptions(model=model, vae=vae, controller=spec, cfg=guidance_scale, top_k=top_k, top_p=top_p,
                            prune_layers=parse_layer_range(prune_layers), save_intermediates=save_intermediates,
                            spectra=spectra, device=device)
    _check_options(pipe, options, rows)
    configs = launch_generate(rows, options, output_dir, num_workers, batch_size, address)
    secs = sum(c["seconds_per_image"] for c in configs) / max(len(configs), 1)
    typer.echo(f"{len(configs)} images -> {output_dir} (controller {spec}; {secs:.3f} s/image in the generators)")


def default_conditions(pipe) -> tuple[list[int] | None, list[str] | None]:
    """What `var generate` draws when no --classes / --prompt-file is given: every class of a
    class-conditional model, the demo's held-out captions for a text-conditional one."""
    if pipe.config.var.cond == "text":
        from ecad_ray.shapes import heldout_captions

        return None, heldout_captions()
    return list(range(pipe.config.var.num_classes)), None


def _check_options(pipe, options, rows) -> None:
    """Fail fast in the driver (widths, layers, classes, prompts) before Ray actors start."""
    from ecad_ray.var.controllers import make_controller

    make_controller(options.controller, pipe.patch_nums, pipe)
    if rows[0]["class_label"] >= 0:
        pipe.conditions(classes=sorted({r["class_label"] for r in rows}))
    else:
        pipe.conditions(prompts=[r["prompt"] for r in rows])
    if options.prune_layers and options.prune_layers[1] > pipe.config.var.depth:
        raise UserError(f"--prune-layers: end {options.prune_layers[1]} is past the model's {pipe.config.var.depth} layers")


def launch_generate(rows, options, output_dir, num_workers, batch_size, address=None):
    """Run the Ray plan (a seam the CLI tests patch)."""
    from actors.var_plan import run_var_generate

    return run_var_generate(rows, options, output_dir, num_actors=num_workers, batch_size=batch_size,
                            address=address)


@var_app.command("eval")
def eval_cmd(
    orig: Annotated[Path, typer.Option(help="Folder of the unpruned (original) images.")],
    fast: Annotated[Path, typer.Option(help="Folder of the pruned images.")],
    rl: Annotated[Optional[Path], typer.Option(help="Folder of RL-controlled images (optional).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Parquet of per-image metrics (default: <fast>/var_eval.parquet).")] = None,
    lpips_random_backbone: Annotated[bool, typer.Option("--lpips-random-backbone", help="LPIPS with a fixed random AlexNet (pnet_rand) when torchvision's weights are absent.")] = False,
    clip_model: Annotated[Optional[str], typer.Option(help="CLIP for the CLIP score (hub id or folder; default openai/clip-vit-base-patch32).")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="Skip the CLIP score.")] = False,
    device: Annotated[str, typer.Option(help="Device for LPIPS / CLIP.")] = "cpu",
) -> None:
    """PSNR / SSIM / LPIPS vs the original images, CLIP score with text prompts; table + Parquet."""
    from ecad_ray.var.evaluation import EvalOptions, evaluate, summarize
    from ecad_ray.atomic import write_bytes_atomic

    others = {"fast": fast} | ({"rl": rl} if rl else {})
    options = EvalOptions(lpips_backbone="random" if lpips_random_backbone else "pretrained",
                          clip_model=clip_model, device=device)
    if no_clip:
        options = EvalOptions(options.lpips_backbone, "", device)
    df = evaluate(orig, others, options, echo=typer.echo)
    summary = summarize(df, {"orig": orig, **others})
    _print_table(summary, f"VAR eval vs {orig} (LPIPS backbone: {options.lpips_backbone})")
    target = output or (fast / "var_eval.parquet")
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_bytes_atomic(target, buf.getvalue())
    typer.echo(f"per-image metrics -> {target}")


def _print_table(df, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in df.columns:
        table.add_column(col, justify="right" if col != "set" else "left")
    for _, row in df.iterrows():
        table.add_row(*[_fmt(v) for v in row.tolist()])
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
    output: Annotated[Optional[Path], typer.Option(help="Where the trained safetensors goes (default: the shipped demo-var file).")] = None,
    vq_steps: Annotated[int, typer.Option(help="Tokenizer updates.")] = 400,
    var_steps: Annotated[int, typer.Option(help="Transformer updates.")] = 800,
    batch_size: Annotated[int, typer.Option(help="Images per update.")] = 48,
    seed: Annotated[int, typer.Option(help="Seed of data order and initial weights.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
) -> None:
    """Train `demo-var` (digits, 16x16) on a CPU: tokenizer, then transformer."""
    from ecad_ray.var.checkpoints import DEMO_WEIGHTS
    from ecad_ray.var.train import TrainConfig, train_demo

    if min(vq_steps, var_steps, batch_size, threads) < 1:
        raise UserError("--vq-steps / --var-steps / --batch-size / --threads: must be >= 1")
    tc = TrainConfig(vq_steps=vq_steps, var_steps=var_steps, batch_size=batch_size, seed=seed, threads=threads,
                     warmup=min(50, vq_steps, var_steps))
    train_demo(output or DEMO_WEIGHTS, tc=tc, log=lambda s: typer.echo(s))


def register(app: typer.Typer) -> None:
    """Attach `var` to the root CLI."""
    app.add_typer(var_app, name="var")


from ecad_ray_cli.var_rl import rl_app  # noqa: E402  (`var rl train|frontier`)

var_app.add_typer(rl_app, name="rl")
