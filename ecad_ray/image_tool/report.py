"""What one `ecad-ray image` run did and measured, as text lines or one JSON object.

The text report follows the seed tool's order: environment block, settings, notes, the
`Generating:` line, timings, peak memory, `Saved -> PATH`. Every line is rendered from an
`ImageReport`, so the printed text and `--json` cannot disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class ImageReport:
    """Everything one run did and measured; the text and JSON reports are views of it."""

    environment: dict
    model: str
    pipeline: str = ""
    dtype: str = ""
    variant: str | None = None
    scheduler: str = ""
    attention_slicing: bool = False
    offload: bool = False
    vae_slicing: bool = False
    schedule: str | None = None
    cache: dict | None = None  # with a schedule: sub-layer calls computed / reused, peak cache bytes
    turbo: bool = False
    width: int = 0
    height: int = 0
    steps: int = 0
    cfg: float = 0.0
    seed: int = 0
    load_seconds: float = 0.0
    generation_seconds: float = 0.0
    total_seconds: float = 0.0
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""
    memory_before_load_bytes: int = 0  # same measure, just before loading: the baseline of the peak
    out: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The report as one JSON object (one line)."""
        return json.dumps(asdict(self))


def environment_lines(env: dict) -> list[str]:
    """The block printed first: software versions and the device."""
    lines = [f"torch {env['torch']}, diffusers {env['diffusers']}, CUDA {env['cuda'] or 'not available'}"]
    if env["compute_capability"]:
        lines.append(f"GPU: {env['device']} (compute capability {env['compute_capability']})")
    else:
        lines.append("Device: CPU")
    return lines


def settings_line(report: ImageReport) -> str:
    """Model, precision, sampler and memory switches as they took effect."""
    variant = f" ({report.variant} weights)" if report.variant else ""
    on = {True: "on", False: "off"}
    return (
        f"Model: {report.model} ({report.pipeline}), dtype {report.dtype}{variant}, "
        f"scheduler {report.scheduler}, attention slicing {on[report.attention_slicing]}, "
        f"offload {on[report.offload]}, VAE slicing {on[report.vae_slicing]}, "
        f"schedule {report.schedule or 'none'}"
    )


def generating_line(report: ImageReport) -> str:
    """The seed tool's `Generating: WxH, steps=…, cfg=…, seed=…` line."""
    return (
        f"Generating: {report.width}x{report.height}, steps={report.steps}, "
        f"cfg={report.cfg}, seed={report.seed}"
    )


def result_lines(report: ImageReport) -> list[str]:
    """Timings, peak memory, what the cache reused, and where the image went."""
    lines = [
        f"Load: {report.load_seconds:.2f} s",
        f"Generation: {report.generation_seconds:.2f} s",
        f"Total: {report.total_seconds:.2f} s",
        f"Peak memory: {report.peak_memory_bytes / 2**20:.1f} MiB ({report.peak_memory_kind}; "
        f"{report.memory_before_load_bytes / 2**20:.1f} MiB before loading)",
    ]
    if report.cache is not None:
        c = report.cache
        lines.append(
            f"Cache: reused {c['reused']} of {c['reused'] + c['computed']} sub-layer calls, "
            f"peak {c['peak_bytes'] / 2**20:.1f} MiB"
        )
    lines.append(f"Saved -> {report.out}")
    return lines


def report_lines(report: ImageReport) -> list[str]:
    """The whole text report, exactly as `generate_image` emits it line by line."""
    return [
        *environment_lines(report.environment),
        settings_line(report),
        *(f"note: {n}" for n in report.notes),
        generating_line(report),
        *result_lines(report),
    ]
