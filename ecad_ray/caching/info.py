"""What `ecad-ray schedule info` and `ecad-ray schedule macs` say about a schedule file.

Every MAC total names its convention (`macs.CONVENTIONS`): the text length the model runs, or
the one ECAD's published `metrics` count; where the two agree (PixArt-α, FLUX, demo) one figure
is both.
"""

from __future__ import annotations

from pathlib import Path

from ecad_ray.caching.macs import CONVENTIONS, ECAD, MODEL, conventions_differ, schedule_mac_report
from ecad_ray.caching.schedule import Schedule, load_schedule
from ecad_ray.caching.spec import TransformerSpec, resolve_spec
from ecad_ray.caching.validate import validate_schedule
from ecad_ray.models.families import family_named


def costing_spec(schedule: Schedule, model: str | None) -> TransformerSpec:
    """The model a schedule is costed on: `model`, else its family's reference model at the
    schedule's own image size (its `config.height` / `config.width`, when it records them)."""
    spec = resolve_spec(model or family_named(schedule.family).reference_model)
    cfg = schedule.config or {}
    if model is None and ("height" in cfg or "width" in cfg):
        spec = spec.at_size(int(cfg.get("height", spec.height)), int(cfg.get("width", spec.width)))
    return spec


def macs_line(total: int, convention: str, text_tokens: int, agree: bool = False) -> str:
    """`N MACs (T TMACs; <convention> convention: K text tokens)`: a total that names its convention.

    `agree` says both conventions count the same text length, so the one figure is both the
    real cost and ECAD's.
    """
    label = "model and ecad conventions agree" if agree else f"{convention} convention"
    return f"{total} MACs ({total / 1e12:.3f} TMACs; {label}: {text_tokens} text tokens)"


def schedule_info(file: str | Path, model: str | None = None) -> dict:
    """Family, blocks, steps, fraction recomputed per component and MACs of the schedule in `file`.

    MACs come in both conventions: `total_macs` at the text length the model runs, and
    `ecad_total_macs` at the one ECAD's published `metrics` use (`published_total_macs`).
    """
    schedule = load_schedule(file)
    spec = costing_spec(schedule, model)
    validate_schedule(schedule, spec, source=str(file))
    report = schedule_mac_report(schedule, spec, convention=MODEL)
    ecad = schedule_mac_report(schedule, spec, convention=ECAD)
    published = (schedule.metrics or {}).get("total_macs")
    return {
        "file": str(file),
        "name": schedule.name,
        "family": schedule.family,
        "num_blocks": schedule.num_blocks,
        "num_single_blocks": schedule.num_single_blocks,
        "num_inference_steps": schedule.num_inference_steps,
        "recompute_fraction": {k: round(v, 4) for k, v in schedule.recompute_fraction().items()},
        "tgate_gate_step": schedule.tgate_gate_step,
        "model": spec.name,
        "height": spec.height,
        "width": spec.width,
        "total_macs": report.total,
        "macs_convention": MODEL,
        "text_tokens": report.text_tokens,
        "ecad_total_macs": ecad.total,
        "ecad_text_tokens": ecad.text_tokens,
        "mac_ratio": round(report.ratio, 4),
        "published_total_macs": published,
        "published_convention": ECAD if published is not None else None,
    }


def info_lines(info: dict) -> list[str]:
    """`schedule_info`'s fields as aligned `key value` lines, totals written out with their convention."""
    agree = info["text_tokens"] == info["ecad_text_tokens"]
    lines = []
    for key, value in info.items():
        if key == "recompute_fraction":
            value = ", ".join(f"{k} {v:.1%}" for k, v in value.items())
        elif key == "total_macs":
            value = macs_line(value, info["macs_convention"], info["text_tokens"], agree)
        elif key == "ecad_total_macs":
            value = macs_line(value, ECAD, info["ecad_text_tokens"], agree)
        elif key == "published_total_macs" and value is not None:
            value = f"{value} MACs ({value / 1e12:.3f} TMACs; {ECAD} convention)"
        lines.append(f"{key:22s} {value}")
    return lines


def mac_lines(file: str | Path, model: str, height: int | None = None, width: int | None = None,
              convention: str = MODEL, by_step: bool = False) -> list[str]:
    """The schedule's total MACs on `model` (at `height` x `width`, default the model's), named.

    The first line is the `convention` total; where the other convention counts a different
    text length (PixArt-Σ: 300 run, 120 published by ECAD) a second line gives it. `by_step`
    adds `step S MACS` and `component C MACS` lines.
    """
    schedule = load_schedule(file)
    spec = resolve_spec(model)
    if height is not None or width is not None:
        spec = spec.at_size(height or spec.height, width or spec.width)
    validate_schedule(schedule, spec, source=str(file))
    report = schedule_mac_report(schedule, spec, convention=convention)
    differ = conventions_differ(spec)
    lines = [macs_line(report.total, report.convention, report.text_tokens, agree=not differ)]
    if differ:
        other = schedule_mac_report(schedule, spec, convention=next(c for c in CONVENTIONS if c != convention))
        lines.append(macs_line(other.total, other.convention, other.text_tokens))
    if by_step:
        lines += [f"step {step} {value}" for step, value in report.by_step.items()]
        lines += [f"component {comp} {value}" for comp, value in report.by_component.items()]
    return lines
