"""Baseline schedule families in ECAD's format, the hand-made schedules ECAD compares against.

* `default`: recompute everything (the uncached baseline).
* `fora`: FORA-style, every sub-layer recomputed every `interval` steps, reused in between.
* `every`: recompute-every-N per component (`{"attn1": 2, "ff": 3}`); unnamed ones every step.
* `delta-dit`: Δ-DiT-style; before `boundary_step` the rear `num_cached_blocks` blocks are
  reused, from it on the front ones, each refreshed every `interval` steps.
* `tgate`: TGATE; cross-attention reused (CFG halves averaged) from `gate_step` on, when CFG
  is dropped too; before the gate, after `warmup` steps, self-attention is recomputed only every
  `sp_interval` steps; after it the feed-forward every `fi_interval` steps.

Step 0 always recomputes in every family (nothing is cached yet).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.caching.macs import MacReport, schedule_mac_report
from ecad_ray.caching.schedule import TGATE, Schedule, make_schedule, save_schedule
from ecad_ray.caching.spec import TransformerSpec, resolve_spec
from ecad_ray.errors import UserError

KINDS = ("default", "fora", "every", "delta-dit", "tgate")


def _build(spec: TransformerSpec, steps: int, name: str, flag, attributes: dict, **extra) -> Schedule:
    bits = {
        s: {b: {c: bool(s == 0 or flag(s, i, b, c)) for c in spec.components_of(b)} for i, b in enumerate(spec.block_names)}
        for s in range(steps)
    }
    affected = [s for s in range(steps) if not all(all(v.values()) for v in bits[s].values())]
    attrs = {"num_affected_steps": len(affected), **attributes}
    return make_schedule(
        name, bits, spec.num_blocks, steps,
        num_single_blocks=spec.schedule_num_single_blocks,
        attributes=attrs, **extra,
    )


def default_schedule(spec: TransformerSpec, steps: int) -> Schedule:
    """Every sub-layer recomputed at every step."""
    return _build(spec, steps, "default", lambda s, i, b, c: True, {})


def fora_schedule(spec: TransformerSpec, steps: int, interval: int) -> Schedule:
    """All sub-layers recomputed at steps divisible by `interval`, reused otherwise."""
    _positive("--interval", interval)
    return _build(spec, steps, f"recompute_all_every_{interval:03d}", lambda s, i, b, c: s % interval == 0,
                  {"num_affected_blocks": spec.num_blocks, "interval": interval})


def every_schedule(spec: TransformerSpec, steps: int, intervals: dict[str, int]) -> Schedule:
    """Component `c` recomputed every `intervals[c]` steps (every step when not named)."""
    known = {c for b in spec.block_names for c in spec.components_of(b)}
    for comp, n in intervals.items():
        if comp not in known:
            raise UserError(f'--every: unknown component "{comp}" (expected {", ".join(sorted(known))})')
        _positive(f"--every {comp}", n)
    name = "recompute_every_" + "_".join(f"{c}_{n:03d}" for c, n in sorted(intervals.items()))
    attrs = {f"recompute_{c}_every": n for c, n in sorted(intervals.items())}
    return _build(spec, steps, name, lambda s, i, b, c: s % intervals.get(c, 1) == 0, attrs)


def delta_dit_schedule(spec: TransformerSpec, steps: int, num_cached_blocks: int, boundary_step: int,
                       interval: int) -> Schedule:
    """Rear blocks reused before `boundary_step`, front blocks after; refreshed every `interval`."""
    _positive("--interval", interval)
    blocks = spec.block_names
    if not 0 < num_cached_blocks <= len(blocks):
        raise UserError(f"--num-cached-blocks: {num_cached_blocks} is outside 1..{len(blocks)}")
    rear = set(blocks[len(blocks) - num_cached_blocks:])
    front = set(blocks[:num_cached_blocks])

    def flag(s, i, b, c):
        cached = rear if s < boundary_step else front
        return b not in cached or s % interval == 0

    return _build(spec, steps, f"delta_dit_k_{num_cached_blocks:03d}_b_{boundary_step:03d}_n_{interval:03d}", flag,
                  {"num_affected_blocks": num_cached_blocks, "boundary_step": boundary_step, "interval": interval})


def tgate_schedule(spec: TransformerSpec, steps: int, gate_step: int, sp_interval: int = 1,
                   fi_interval: int = 1, warmup: int = 2) -> Schedule:
    """TGATE: cross-attention cached from `gate_step` on (see module docstring)."""
    family = spec.model_family
    if not family.supports_tgate:
        raise UserError("make tgate: TGATE needs PixArt cross-attention (attn2)")
    if not 1 <= gate_step <= steps:
        raise UserError(f"--gate-step: {gate_step} is outside 1..{steps}")
    _positive("--sp-interval", sp_interval)
    _positive("--fi-interval", fi_interval)

    def flag(s, i, b, c):
        if s < warmup:
            return True
        if s < gate_step:
            return s % sp_interval == 0 if c == family.self_attention else True
        if c == family.cross_attention:
            return False
        return s % fi_interval == 0 if c == family.feed_forward else True

    custom = {b: {"name": TGATE, "kwargs": {"gate_step": gate_step}} for b in spec.block_names}
    name = f"tgate_m_{gate_step:03d}_sp_{sp_interval:03d}_fi_{fi_interval:03d}_warmup_{warmup:03d}"
    attrs = {"num_affected_blocks": spec.num_blocks, "gate_step": gate_step, "sp_interval": sp_interval,
             "fi_interval": fi_interval, "warmup": warmup}
    return _build(spec, steps, name, flag, attrs, custom=custom,
                  config={"pipeline": {"name": "tgate", "kwargs": {"gate_step": gate_step}}})


def _positive(option: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{option}: must be a positive integer, got {value}")


@dataclass(frozen=True)
class BaselineParams:
    """The knobs of every baseline family (each family reads its own; see the module docstring)."""

    interval: int = 2  # fora / delta-dit: recompute every N steps
    every: dict[str, int] | None = None  # every: per-component intervals
    num_cached_blocks: int = 1  # delta-dit
    boundary_step: int = 10  # delta-dit
    gate_step: int = 10  # tgate
    sp_interval: int = 1  # tgate: self-attention interval before the gate
    fi_interval: int = 1  # tgate: feed-forward interval after the gate
    warmup: int = 2  # tgate: first steps computed in full


def make_baseline(kind: str, spec: TransformerSpec, steps: int, params: BaselineParams = BaselineParams()) -> Schedule:
    """The `kind` baseline (one of `KINDS`) over `steps` steps on `spec`."""
    if steps < 1:
        raise UserError(f"--steps {steps}: must be a positive integer")
    if kind == "default":
        return default_schedule(spec, steps)
    if kind == "fora":
        return fora_schedule(spec, steps, params.interval)
    if kind == "every":
        if not params.every:
            raise UserError("--every: give per-component intervals, e.g. attn1=2,ff=3")
        return every_schedule(spec, steps, params.every)
    if kind == "delta-dit":
        return delta_dit_schedule(spec, steps, params.num_cached_blocks, params.boundary_step, params.interval)
    if kind == "tgate":
        return tgate_schedule(spec, steps, params.gate_step, params.sp_interval, params.fi_interval, params.warmup)
    raise UserError(f"make {kind}: unknown kind; use one of {', '.join(KINDS)}")


def write_baseline(kind: str, model: str, output: str | Path, steps: int,
                   params: BaselineParams = BaselineParams()) -> tuple[Schedule, MacReport]:
    """Write the `kind` baseline for `model` to `output` in ECAD's format, its MACs in `metrics`."""
    spec = resolve_spec(model)
    schedule = make_baseline(kind, spec, steps, params)
    report = schedule_mac_report(schedule, spec)
    schedule = dataclasses.replace(schedule, metrics=report.as_metrics())
    save_schedule(schedule, output)
    return schedule, report
