"""`ecad-ray image`: one image from one prompt with any diffusers text-to-image model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

_MODEL_HELP = "Registry name (demo, pixart-alpha-256, ...), hub id or save_pretrained folder."
_DTYPE_HELP = (
    "auto (bf16/fp16 on a GPU that supports it, fp32 on CPU), fp16 (loads the fp16 weight "
    "variant when there is one), bf16 or fp32."
)
_SCHEDULER_HELP = "auto (the model's own), dpm (DPM-Solver++ with Karras sigmas) or euler_a (Euler ancestral)."


def image(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    prompt: Annotated[str, typer.Option(help="What to draw.")],
    negative_prompt: Annotated[Optional[str], typer.Option(help="What to steer away from.")] = None,
    out: Annotated[Path, typer.Option(help="Image file to write; its suffix picks the format.")] = Path("image.png"),
    steps: Annotated[
        Optional[int], typer.Option(help="Denoising steps (default: Turbo 4, a registry model's own, else 30).")
    ] = None,
    cfg: Annotated[
        Optional[float], typer.Option(help="Guidance scale (default: Turbo 0.0, a registry model's own, else 7.5).")
    ] = None,
    size: Annotated[
        Optional[str], typer.Option(help="WIDTHxHEIGHT, rounded to multiples of 8 (default: the model's native size).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Generator seed on the active device; same options, same image.")] = 42,
    dtype: Annotated[str, typer.Option(help=_DTYPE_HELP)] = "auto",
    scheduler: Annotated[str, typer.Option(help=_SCHEDULER_HELP)] = "auto",
    attn_slicing: Annotated[bool, typer.Option("--attn-slicing", help="Compute attention in slices (less memory).")] = False,
    offload: Annotated[bool, typer.Option("--offload", help="Model CPU offload (needs a GPU); implies --attn-slicing.")] = False,
    schedule: Annotated[Optional[Path], typer.Option(help="ECAD caching schedule (JSON) for DiT models.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Generate one image and report the environment, timings and peak memory."""
    from ecad_ray.image_tool import ImageOptions, generate_image

    options = ImageOptions(
        model=model,
        prompt=prompt,
        negative_prompt=negative_prompt,
        out=out,
        steps=steps,
        cfg=cfg,
        size=size,
        seed=seed,
        dtype=dtype,
        scheduler=scheduler,
        attn_slicing=attn_slicing,
        offload=offload,
        schedule=schedule,
    )
    report = generate_image(options, emit=None if json_output else typer.echo)
    if json_output:
        typer.echo(report.to_json())


def register(app: typer.Typer) -> None:
    """Attach `image` to the root app."""
    app.command("image")(image)
