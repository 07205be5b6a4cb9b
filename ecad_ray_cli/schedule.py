"""`ecad-ray schedule`: inspect, validate, cost, make and time ECAD caching schedules."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecad_ray.errors import UserError

schedule_app = typer.Typer(
    name="schedule",
    help="ECAD caching schedules: info, validate, macs, make, bench.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    str, typer.Option(help="demo, pixart-alpha-256, pixart-sigma-256, flux-dev, or a folder with transformer/config.json.")
]


def _spec_for(schedule, model: str | None):
    """The model a schedule is costed on: `--model`, else the shipped config of its family."""
    from ecad_ray.caching.spec import resolve_spec
    from ecad_ray.models.families import family_named

    name = model or family_named(schedule.family).reference_model
    spec = resolve_spec(name)
    cfg = schedule.config or {}
    if model is None and ("height" in cfg or "width" in cfg):
        spec = spec.at_size(int(cfg.get("height", spec.height)), int(cfg.get("width", spec.width)))
    return spec


ConventionOption = Annotated[
    str,
    typer.Option(help="Text length to count: model (the tokens the model runs: PixArt-Σ 300) or ecad "
                      "(ECAD's published metrics: 120 for every PixArt)."),
]


def _macs_line(report, agree: bool = False) -> str:
    """`N MACs (T TMACs; <convention> convention: K text tokens)`: a total that names its convention.

    `agree` says both conventions count the same text length (PixArt-α, FLUX, demo), so the
    one figure is both the real cost and ECAD's.
    """
    label = "model and ecad conventions agree" if agree else f"{report.convention} convention"
    return f"{report.total} MACs ({report.total / 1e12:.3f} TMACs; {label}: {report.text_tokens} text tokens)"


def _at_size(spec, height: Optional[int], width: Optional[int]):
    if height is None and width is None:
        return spec
    return spec.at_size(height or spec.height, width or spec.width)


@schedule_app.command("info")
def info(
    file: Annotated[Path, typer.Argument(help="Schedule JSON (ECAD format).")],
    model: Annotated[Optional[str], typer.Option(help="Model to cost it on (default: PixArt-XL-2 or FLUX.1-dev by family).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Family, blocks, steps, fraction recomputed per component and total MACs of a schedule.

    MACs come in both conventions: `total_macs` at the text length the model runs, and
    `ecad_total_macs` at the one ECAD's published `metrics` use (`published_total_macs`).
    """
    from ecad_ray.caching import load_schedule, schedule_mac_report, validate_schedule
    from ecad_ray.caching.macs import ECAD, MODEL

    schedule = load_schedule(file)
    spec = _spec_for(schedule, model)
    validate_schedule(schedule, spec, source=str(file))
    report = schedule_mac_report(schedule, spec, convention=MODEL)
    ecad = schedule_mac_report(schedule, spec, convention=ECAD)
    published = (schedule.metrics or {}).get("total_macs")
    out = {
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
    if as_json:
        typer.echo(json.dumps(out))
        return
    for key, value in out.items():
        if key == "recompute_fraction":
            value = ", ".join(f"{k} {v:.1%}" for k, v in value.items())
        elif key == "total_macs":
            value = _macs_line(report, agree=report.text_tokens == ecad.text_tokens)
        elif key == "ecad_total_macs":
            value = _macs_line(ecad, agree=report.text_tokens == ecad.text_tokens)
        elif key == "published_total_macs" and value is not None:
            value = f"{value} MACs ({value / 1e12:.3f} TMACs; {ECAD} convention)"
        typer.echo(f"{key:22s} {value}")


@schedule_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="Schedule JSON (ECAD format).")],
    model: ModelOption = "demo",
) -> None:
    """Check that a schedule fits a model: blocks, single blocks, steps, component names."""
    from ecad_ray.caching import load_schedule, validate_schedule

    schedule = load_schedule(file)
    for warning in validate_schedule(schedule, model, source=str(file)):
        typer.echo(f"warning: {file}: {warning}", err=True)
    typer.echo(f"ok: {file} fits {model} ({schedule.num_inference_steps} steps, {schedule.num_blocks} blocks)")


@schedule_app.command("macs")
def macs(
    file: Annotated[Path, typer.Argument(help="Schedule JSON (ECAD format).")],
    model: ModelOption = "pixart-alpha-256",
    height: Annotated[Optional[int], typer.Option(help="Image height (default: the model's).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width (default: the model's).")] = None,
    by_step: Annotated[bool, typer.Option(help="Also print MACs per step and per component.")] = False,
    convention: ConventionOption = "model",
) -> None:
    """Print the schedule's total MACs (ECAD's counting: transformer linears, batch 2).

    The first line is the `--convention` total, named; where the other convention counts a
    different text length (PixArt-Σ: 300 run, 120 published by ECAD) a second line gives it.
    """
    from ecad_ray.caching import load_schedule, schedule_mac_report, validate_schedule
    from ecad_ray.caching.macs import CONVENTIONS, conventions_differ
    from ecad_ray.caching.spec import resolve_spec

    schedule = load_schedule(file)
    spec = _at_size(resolve_spec(model), height, width)
    validate_schedule(schedule, spec, source=str(file))
    report = schedule_mac_report(schedule, spec, convention=convention)
    differ = conventions_differ(spec)
    typer.echo(_macs_line(report, agree=not differ))
    if differ:
        other = next(c for c in CONVENTIONS if c != convention)
        typer.echo(_macs_line(schedule_mac_report(schedule, spec, convention=other)))
    if by_step:
        for step, value in report.by_step.items():
            typer.echo(f"step {step} {value}")
        for comp, value in report.by_component.items():
            typer.echo(f"component {comp} {value}")


@schedule_app.command("make")
def make(
    kind: Annotated[str, typer.Argument(help="default | fora | every | delta-dit | tgate")],
    output: Annotated[Path, typer.Option(help="Where to write the schedule JSON.")],
    model: ModelOption = "demo",
    steps: Annotated[int, typer.Option(help="Denoising steps the schedule covers.")] = 20,
    interval: Annotated[int, typer.Option(help="fora / delta-dit: recompute every N steps.")] = 2,
    every: Annotated[Optional[str], typer.Option(help="every: per-component intervals, e.g. attn1=2,ff=3.")] = None,
    num_cached_blocks: Annotated[int, typer.Option(help="delta-dit: blocks cached (rear early, front late).")] = 1,
    boundary_step: Annotated[int, typer.Option(help="delta-dit: step where caching moves from rear to front blocks.")] = 10,
    gate_step: Annotated[int, typer.Option(help="tgate: step from which cross-attention is cached and CFG dropped.")] = 10,
    sp_interval: Annotated[int, typer.Option(help="tgate: self-attention recompute interval before the gate.")] = 1,
    fi_interval: Annotated[int, typer.Option(help="tgate: feed-forward recompute interval after the gate.")] = 1,
    warmup: Annotated[int, typer.Option(help="tgate: first steps computed in full.")] = 2,
) -> None:
    """Write a baseline schedule in ECAD's format, with its MACs in `metrics`."""
    from ecad_ray.caching import baselines, save_schedule, schedule_mac_report
    from ecad_ray.caching.spec import resolve_spec

    spec = resolve_spec(model)
    if steps < 1:
        raise UserError(f"--steps {steps}: must be a positive integer")
    if kind == "default":
        schedule = baselines.default_schedule(spec, steps)
    elif kind == "fora":
        schedule = baselines.fora_schedule(spec, steps, interval)
    elif kind == "every":
        schedule = baselines.every_schedule(spec, steps, _parse_every(every))
    elif kind == "delta-dit":
        schedule = baselines.delta_dit_schedule(spec, steps, num_cached_blocks, boundary_step, interval)
    elif kind == "tgate":
        schedule = baselines.tgate_schedule(spec, steps, gate_step, sp_interval, fi_interval, warmup)
    else:
        raise UserError(f"make {kind}: unknown kind; use one of {', '.join(baselines.KINDS)}")
    report = schedule_mac_report(schedule, spec)
    metrics = {
        "by_inference_step": {k: {"macs": v} for k, v in report.by_step.items()},
        "total_macs": report.total,
        "total_macs_T": report.total / 1e12,
    }
    save_schedule(dataclasses.replace(schedule, metrics=metrics), output)
    typer.echo(f"wrote {output}: {schedule.name}, {report.ratio:.1%} of the uncached MACs")


def _parse_every(text: Optional[str]) -> dict[str, int]:
    if not text:
        raise UserError("--every: give per-component intervals, e.g. attn1=2,ff=3")
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if not value.strip().isdigit():
            raise UserError(f"--every {text}: '{part}' is not NAME=INTERVAL")
        out[name.strip()] = int(value)
    return out


@schedule_app.command("bench")
def bench(
    file: Annotated[Path, typer.Argument(help="Schedule JSON (ECAD format).")],
    model: Annotated[str, typer.Option(help="Registry name (demo, pixart-alpha-256, ...), hub id or local folder.")] = "demo",
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call.")] = 1,
    warmups: Annotated[int, typer.Option(help="Untimed calls first.")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed calls.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16.")] = "auto",
    output: Annotated[Optional[Path], typer.Option(help="Write the schedule with metrics.latency here (default: update FILE).")] = None,
) -> None:
    """Time whole pipeline calls under the schedule; store ms/image in `metrics.latency` (ECAD's layout)."""
    from ecad_ray.caching import load_schedule, save_schedule
    from ecad_ray.caching.bench import BenchConfig, bench_schedule

    schedule = load_schedule(file)
    config = BenchConfig(model=model, batch_size=batch_size, warmups=warmups, repeats=repeats, device=device, dtype=dtype)
    latency = bench_schedule(schedule, config, source=str(file))
    metrics = dict(schedule.metrics or {})
    metrics["latency"] = latency
    target = output or file
    save_schedule(dataclasses.replace(schedule, metrics=metrics), target)
    typer.echo(f"{schedule.name}: {latency['avg']:.2f} ms/image on {latency['gpu']} (wrote {target})")


def register(app: typer.Typer) -> None:
    """Attach `ecad-ray schedule ...` to the root app."""
    app.add_typer(schedule_app, name="schedule")
