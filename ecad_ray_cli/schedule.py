"""`ecad-ray schedule`: inspect, validate, cost, make and time ECAD caching schedules."""

from __future__ import annotations

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

ConventionOption = Annotated[
    str,
    typer.Option(help="Text length to count: model (the tokens the model runs: PixArt-Σ 300) or ecad "
                      "(ECAD's published metrics: 120 for every PixArt)."),
]


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
    from ecad_ray.caching.info import info_lines, schedule_info

    out = schedule_info(file, model)
    typer.echo(json.dumps(out) if as_json else "\n".join(info_lines(out)))


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
    from ecad_ray.caching.info import mac_lines

    typer.echo("\n".join(mac_lines(file, model, height, width, convention, by_step)))


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
    from ecad_ray.caching.baselines import BaselineParams, write_baseline

    params = BaselineParams(
        interval=interval, every=_parse_every(every),
        num_cached_blocks=num_cached_blocks, boundary_step=boundary_step,
        gate_step=gate_step, sp_interval=sp_interval, fi_interval=fi_interval, warmup=warmup,
    )
    schedule, report = write_baseline(kind, model, output, steps, params)
    typer.echo(f"wrote {output}: {schedule.name}, {report.ratio:.1%} of the uncached MACs")


def _parse_every(text: Optional[str]) -> dict[str, int] | None:
    """`attn1=2,ff=3` -> {"attn1": 2, "ff": 3}; None when not given (`make every` says it is needed)."""
    if not text:
        return None
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
    from ecad_ray.caching.bench import BenchConfig, bench_schedule_file

    config = BenchConfig(model=model, batch_size=batch_size, warmups=warmups, repeats=repeats, device=device, dtype=dtype)
    schedule, latency, target = bench_schedule_file(file, config, output)
    typer.echo(f"{schedule.name}: {latency['avg']:.2f} ms/image on {latency['gpu']} (wrote {target})")


def register(app: typer.Typer) -> None:
    """Attach `ecad-ray schedule ...` to the root app."""
    app.add_typer(schedule_app, name="schedule")
