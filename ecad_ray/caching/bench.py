"""Latency of a whole pipeline call under a schedule, recorded as ECAD's `metrics.latency`.

ECAD times the full pipeline call (text encoding, denoising, VAE decode) for a batch and
reports milliseconds per image; warm-up calls are kept apart from the timed ones.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ecad_ray.caching.apply import apply_schedule
from ecad_ray.caching.schedule import Schedule, load_schedule, save_schedule
from ecad_ray.caching.validate import validate_schedule
from ecad_ray.errors import UserError
from ecad_ray.models.loading import load_pipeline, resolve_device, resolve_dtype
from ecad_ray.models.registry import ModelSpec, resolve_model


@dataclass(frozen=True)
class BenchConfig:
    """One latency measurement."""

    model: str = "demo"  # registry name, hub id or local folder (see ecad_ray.models.registry)
    batch_size: int = 1  # images per pipeline call (latency is divided by it)
    warmups: int = 1  # untimed calls first (allocations, kernel selection)
    repeats: int = 3  # timed calls
    device: str = "auto"
    dtype: str = "auto"
    prompt: str = "a red circle on the left"
    seed: int = 0


def device_name(device: torch.device) -> str:
    """The accelerator's name (ECAD's `gpu` field), or the CPU's when there is none."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads)"


def _call(pipe, schedule: Schedule, model_spec: ModelSpec, config: BenchConfig):
    height = (schedule.config or {}).get("height", model_spec.height)
    width = (schedule.config or {}).get("width", model_spec.width)
    kwargs = model_spec.model_family.call_kwargs(
        prompt=[config.prompt] * config.batch_size,
        steps=schedule.num_inference_steps,
        guidance_scale=model_spec.guidance_scale,
        height=height,
        width=width,
        max_sequence_length=model_spec.max_sequence_length,
    )
    return pipe(**kwargs, generator=torch.Generator(device="cpu").manual_seed(config.seed))


def bench_schedule(schedule: Schedule, config: BenchConfig, source: str = "") -> dict:
    """Run the pipeline under `schedule` and return ECAD's latency record (ms per image)."""
    for option, value in (("--batch-size", config.batch_size), ("--repeats", config.repeats)):
        if value < 1:
            raise UserError(f"{option} {value}: must be a positive integer")
    if config.warmups < 0:
        raise UserError(f"--warmups {config.warmups}: must be >= 0")
    model_spec = resolve_model(config.model)
    device = resolve_device(config.device)
    pipe = load_pipeline(model_spec, device, resolve_dtype(config.dtype, model_spec, device))
    for warning in validate_schedule(schedule, pipe.transformer, source=source):
        print(f"warning: {source}: {warning}")
    timings: list[float] = []
    with torch.inference_mode(), apply_schedule(pipe, schedule):
        for _ in range(config.warmups + config.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            _call(pipe, schedule, model_spec, config)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings.append((time.perf_counter() - start) * 1000 / config.batch_size)
    latencies = timings[config.warmups:]
    return {
        "avg": sum(latencies) / len(latencies),
        "batch_size": config.batch_size,
        "num_samples": config.repeats,
        "warmup_steps": config.warmups,
        "gpu": device_name(device),
        "warmups": timings[: config.warmups],
        "latencies": latencies,
    }


def bench_schedule_file(file: str | Path, config: BenchConfig,
                        output: str | Path | None = None) -> tuple[Schedule, dict, Path]:
    """Time the schedule in `file` and write it, with `metrics.latency`, to `output` (default: `file`).

    Returns the schedule as written, the latency record and where it went.
    """
    schedule = load_schedule(file)
    latency = bench_schedule(schedule, config, source=str(file))
    schedule = dataclasses.replace(schedule, metrics={**(schedule.metrics or {}), "latency": latency})
    target = Path(output or file)
    save_schedule(schedule, target)
    return schedule, latency, target
