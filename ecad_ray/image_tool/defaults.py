"""Steps, guidance and size when the user leaves them out, and how Turbo models are spotted.

Three sources, in order: what the user asked; a registry model's own `ModelSpec` (ECAD's
settings for `demo`, `pixart-alpha-256`, ...); the seed tool's rule for any other diffusers
model (Turbo-style: 4 steps, cfg 0.0; otherwise 30 steps, cfg 7.5) at the model's native size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.errors import UserError
from ecad_ray.image_tool.options import (
    DEFAULT_CFG,
    DEFAULT_STEPS,
    TURBO_CFG,
    TURBO_STEPS,
    ImageOptions,
    parse_size,
    round_to_multiple,
)
from ecad_ray.models.registry import ModelSpec

FALLBACK_SIZE = 512  # only for pipelines whose configs name no sample size at all


@dataclass(frozen=True)
class Sampling:
    """The numbers one generation uses, after defaults and rounding."""

    width: int
    height: int
    steps: int
    cfg: float
    turbo: bool


def turbo_evidence(model: str, folder: Path | None) -> str | None:
    """Why this model counts as Turbo-style (few-step, guidance-free), or None.

    Turbo checkpoints (SD-Turbo, SDXL-Turbo, SD3.5-Large-Turbo) carry "turbo" in their hub id;
    a local copy written by `save_pretrained` keeps that id as `_name_or_path` in
    `model_index.json` and in the component configs.
    """
    if "turbo" in model.lower():
        return f"'{model}' names a Turbo model"
    if folder is None:
        return None
    configs = [folder / "model_index.json", *sorted(folder.glob("*/config.json"))]
    for path in configs:
        try:
            origin = str(json.loads(path.read_text()).get("_name_or_path", ""))
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if "turbo" in origin.lower():
            return f"{path.relative_to(folder)} records _name_or_path={origin}"
    return None


def native_size(pipe) -> tuple[int, int] | None:
    """The (width, height) the denoiser was trained at, from the pipeline's configs."""
    scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        for name in ("unet", "transformer"):
            config = getattr(getattr(pipe, name, None), "config", None)
            sample = getattr(config, "sample_size", None) if config is not None else None
            if sample is not None:
                break
    if isinstance(sample, int):
        return sample * scale, sample * scale
    if isinstance(sample, (list, tuple)) and len(sample) == 2:
        return int(sample[1]) * scale, int(sample[0]) * scale
    return None


def resolve_sampling(
    options: ImageOptions,
    model_spec: ModelSpec,
    registry: bool,
    pipe,
    turbo: bool,
    schedule_steps: int | None = None,
) -> tuple[Sampling, list[str]]:
    """Fill the unset numbers; return them with notes on every non-obvious choice.

    A caching schedule is made for one step count: it becomes the default, and another
    explicit `--steps` is refused.
    """
    notes: list[str] = []
    if schedule_steps is not None:
        if options.steps is not None and options.steps != schedule_steps:
            raise UserError(
                f"--steps {options.steps}: the caching schedule {options.schedule} is made for "
                f"{schedule_steps} steps; leave --steps out or pass --steps {schedule_steps}"
            )
    if registry:
        steps, cfg = model_spec.steps, model_spec.guidance_scale
    elif turbo:
        steps, cfg = TURBO_STEPS, TURBO_CFG
    else:
        steps, cfg = DEFAULT_STEPS, DEFAULT_CFG
    if options.size is not None:
        width, height, note = parse_size(options.size)
        if note:
            notes.append(note)
    elif registry:
        width, height = model_spec.width, model_spec.height
    else:
        size = native_size(pipe)
        if size is None:
            notes.append(f"no sample size in the model's configs; using {FALLBACK_SIZE}x{FALLBACK_SIZE}")
            size = (FALLBACK_SIZE, FALLBACK_SIZE)
        width, height = (round_to_multiple(v) for v in size)
    return (
        Sampling(
            width=width,
            height=height,
            steps=options.steps if options.steps is not None else (schedule_steps or steps),
            cfg=float(options.cfg) if options.cfg is not None else float(cfg),
            turbo=turbo,
        ),
        notes,
    )
