"""One image from one prompt, with the figures a user needs to compare settings.

`generate_image` loads the model, fills the defaults, applies scheduler and memory settings,
generates with a generator seeded on the active device (same options -> same image), writes
the file atomically and returns an `ImageReport` (see `report.py` for its text and JSON forms).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Callable

import torch

from ecad_ray.atomic import atomic_path
from ecad_ray.errors import UserError
from ecad_ray.image_tool.defaults import resolve_sampling, turbo_evidence
from ecad_ray.image_tool.loader import load_model
from ecad_ray.image_tool.memory import apply_memory_settings, environment
from ecad_ray.image_tool.options import ImageOptions, image_format
from ecad_ray.image_tool.report import (
    ImageReport,
    environment_lines,
    generating_line,
    result_lines,
    settings_line,
)
from ecad_ray.image_tool.schedule import attach_schedule, load_checked_schedule
from ecad_ray.image_tool.schedulers import swap_scheduler
from ecad_ray.models.loading import resolve_device
from ecad_ray.peak_memory import MemoryWindow

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def generate_image(options: ImageOptions, emit: Callable[[str], None] | None = None) -> ImageReport:
    """Run one request end to end; `emit` receives each report line as soon as it is known."""
    emit = emit or (lambda line: None)
    start = time.perf_counter()
    device = resolve_device(None)
    report = ImageReport(environment=environment(device), model=options.model, seed=options.seed)
    for line in environment_lines(report.environment):
        emit(line)
    fmt = image_format(options.out)

    memory = MemoryWindow(device)
    began = time.perf_counter()
    loaded = load_model(options.model, options.dtype, device, offload=options.offload)
    _sync(device)
    report.load_seconds = time.perf_counter() - began
    kwargs, cache = _configure(loaded, options, device, report)
    emit(settings_line(report))
    for note in report.notes:
        emit(f"note: {note}")
    emit(generating_line(report))

    generator = torch.Generator(device=device).manual_seed(options.seed)
    began = time.perf_counter()
    try:
        image = loaded.pipe(**kwargs, generator=generator).images[0]
    except ValueError as err:  # diffusers' check_inputs: sizes, steps, prompt lengths
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"--model {options.model}: {report.pipeline} refused these settings ({message})") from err
    _sync(device)
    report.generation_seconds = time.perf_counter() - began
    if cache is not None:
        stats = cache.stats
        report.cache = {"computed": stats.computed, "reused": stats.reused, "peak_bytes": stats.peak_bytes}

    report.out = str(options.out)
    _save_atomic(image, Path(options.out), fmt)
    report.total_seconds = time.perf_counter() - start
    figures = memory.figures()
    report.memory_before_load_bytes = figures.before_bytes
    report.peak_memory_bytes, report.peak_memory_kind = figures.peak_bytes, figures.kind
    for line in result_lines(report):
        emit(line)
    return report


def _configure(loaded, options: ImageOptions, device: torch.device, report: ImageReport):
    """Defaults, scheduler, memory savers and caching schedule on the loaded pipeline.

    Fills the report's settings and notes; returns the pipeline call's arguments and the
    cache handle (None without a schedule).
    """
    pipe = loaded.pipe
    report.notes.extend(loaded.notes)
    schedule = None
    if options.schedule is not None:
        schedule, warnings = load_checked_schedule(pipe, Path(options.schedule))
        report.notes.extend(f"schedule: {w}" for w in warnings)
    evidence = None if loaded.registry else turbo_evidence(options.model, loaded.folder)
    sampling, notes = resolve_sampling(
        options, loaded.model_spec, loaded.registry, pipe, evidence is not None,
        schedule_steps=schedule.num_inference_steps if schedule is not None else None,
    )
    if evidence and (options.steps is None or options.cfg is None):
        notes.insert(0, f"Turbo-style model ({evidence}): defaults {sampling.steps} steps, cfg {sampling.cfg}")
    report.notes.extend(notes)
    report.scheduler = swap_scheduler(pipe, options.scheduler, options.model)
    memory, notes = apply_memory_settings(pipe, options.attn_slicing, options.offload, device)
    report.notes.extend(notes)
    kwargs = _call_kwargs(pipe, options, loaded, sampling)
    cache = None
    if schedule is not None:
        cache = attach_schedule(pipe, schedule)
        report.schedule = str(options.schedule)

    report.pipeline = type(pipe).__name__
    report.dtype = _DTYPE_NAMES.get(loaded.dtype, str(loaded.dtype))
    report.variant = loaded.variant
    report.attention_slicing = memory.attention_slicing
    report.offload = memory.offload
    report.vae_slicing = memory.vae_slicing
    report.turbo = sampling.turbo
    report.width, report.height = sampling.width, sampling.height
    report.steps, report.cfg = sampling.steps, sampling.cfg
    return kwargs, cache


def _call_kwargs(pipe, options: ImageOptions, loaded, sampling) -> dict:
    """Arguments for `pipe(...)`, passing optional ones only where the pipeline takes them."""
    params = inspect.signature(pipe.__call__).parameters
    kwargs = {
        "prompt": options.prompt,
        "num_inference_steps": sampling.steps,
        "guidance_scale": sampling.cfg,
        "height": sampling.height,
        "width": sampling.width,
        "output_type": "pil",
    }
    if options.negative_prompt is not None:
        if "negative_prompt" not in params:
            raise UserError(f"--negative-prompt: {type(pipe).__name__} takes no negative prompt")
        kwargs["negative_prompt"] = options.negative_prompt
    if loaded.registry:  # as `ecad-ray generate` runs registry models (ECAD's settings)
        text = loaded.model_spec.model_family.prompt_kwargs(loaded.model_spec.max_sequence_length)
        kwargs.update((k, v) for k, v in text.items() if k in params)
    if "use_resolution_binning" in params and _binning_unsupported(pipe):
        kwargs["use_resolution_binning"] = False
    return kwargs


def _binning_unsupported(pipe) -> bool:
    """PixArt maps sizes to aspect-ratio bins only for its trained sample sizes (256-2048 px)."""
    sample = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "sample_size", None)
    return sample not in (32, 64, 128, 256)


def _save_atomic(image, out: Path, fmt: str) -> None:
    """Write to a temporary file beside `out`, then rename, so no half-written image is left."""
    with atomic_path(out) as tmp:
        image.save(tmp, format=fmt)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
