"""Where per-scale pruning ratios come from: a pluggable `Controller`.

A controller answers `ratio(scale_index, num_scales, state) -> float` once per scale,
before that scale runs: 0 = compute every token, (0, 1) = prune that fraction of tokens,
>= 1 = skip the scale. `state` is the generation's `ScaleState` (widths, ratios so far, the
current summed latent), so a learned policy can look at what has been generated so far.
Built-ins: `NoPruning`, `TailPattern` (the seed tool's default), `WidthRatios` (a
`"width:ratio,..."` string), `UniformRatio` (one ratio on every scale that matters). A
controller may also answer one ratio per item (`per_item = True`, the RL policy in
`ecad_ray.var.rl`); `ecad_ray.var.items.generate_items` runs those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ecad_ray.errors import UserError

SEED_TAIL_PATTERN = (0.3, 0.4, 1.0, 1.0, 0.8, 1.0)  # the seed tool's ratios for the last six scales


@runtime_checkable
class Controller(Protocol):
    """Anything with this method can drive pruning (a Python object, a Ray actor proxy, ...)."""

    def ratio(self, scale_index: int, num_scales: int, state: Any) -> float:
        """Pruning ratio for `scale_index` (0-based) of `num_scales`."""
        ...


@dataclass(frozen=True)
class NoPruning:
    """Every scale computes every token: the unpruned baseline."""

    def ratio(self, scale_index: int, num_scales: int, state: Any = None) -> float:
        """Always 0."""
        return 0.0

    def describe(self) -> str:
        """Name recorded in configs."""
        return "none"


@dataclass(frozen=True)
class TailPattern:
    """Fixed ratios for the last `len(pattern)` scales, 0 before them (the seed's default)."""

    pattern: tuple[float, ...] = SEED_TAIL_PATTERN

    def ratio(self, scale_index: int, num_scales: int, state: Any = None) -> float:
        """pattern[k] for the k-th of the last scales; earlier scales are not pruned."""
        offset = scale_index - (num_scales - len(self.pattern))
        return float(self.pattern[offset]) if offset >= 0 else 0.0

    def describe(self) -> str:
        """Name recorded in configs."""
        return "tail:" + ",".join(f"{r:g}" for r in self.pattern)


@dataclass(frozen=True)
class WidthRatios:
    """Ratios keyed by token-map width (`"8:0.5,16:1.0"`); widths not listed are not pruned."""

    by_width: dict[int, float] = field(default_factory=dict)
    patch_nums: tuple[int, ...] = ()  # needed to turn a scale index into a width

    def ratio(self, scale_index: int, num_scales: int, state: Any = None) -> float:
        """The ratio listed for this scale's width, else 0."""
        return float(self.by_width.get(self.patch_nums[scale_index], 0.0))

    def describe(self) -> str:
        """Name recorded in configs (the normalised string)."""
        return format_width_ratios(self.by_width)


@dataclass(frozen=True)
class UniformRatio:
    """The same ratio on every scale (a scale too small to lose a token is computed in full)."""

    value: float

    def ratio(self, scale_index: int, num_scales: int, state: Any = None) -> float:
        """Always `value`."""
        return float(self.value)

    def describe(self) -> str:
        """Name recorded in configs."""
        return f"uniform:{self.value:g}"


FASTVAR_TAIL = (0.4, 0.5, 1.0, 1.0)  # FastVAR's Infinity-2B default on its last four scales (32, 40 | 48, 64 skipped)


def parse_width_ratios(text: str, patch_nums: tuple[int, ...] | None = None,
                       option: str = "--pruning-scales") -> dict[int, float]:
    """Parse `"8:0.5,16:1.0"` into {8: 0.5, 16: 1.0}; widths must exist in `patch_nums`."""
    out: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        width, sep, ratio = part.partition(":")
        try:
            w, r = int(width), float(ratio)
        except ValueError:
            raise UserError(f"{option} {text!r}: {part!r} is not width:ratio (e.g. 8:0.5)") from None
        if not sep or r < 0:
            raise UserError(f"{option} {text!r}: {part!r} needs a ratio >= 0 (e.g. 8:0.5)")
        if patch_nums is not None and w not in patch_nums:
            raise UserError(f"{option} {text!r}: width {w} is not a scale of this model "
                            f"(widths: {','.join(map(str, patch_nums))})")
        if w in out:
            raise UserError(f"{option} {text!r}: width {w} is listed twice")
        out[w] = r
    return out


def format_width_ratios(by_width: dict[int, float]) -> str:
    """Inverse of `parse_width_ratios`."""
    return ",".join(f"{w}:{r:g}" for w, r in sorted(by_width.items()))


def make_controller(spec: str | None, patch_nums: tuple[int, ...], pipeline: Any = None,
                    policy_act: Any = None) -> Controller:
    """Controller from a CLI-style spec: `none`, `default` (seed tail pattern), `width:ratio,...`,
    or `rl:POLICY[@BUDGET]` (a trained policy, checked against `pipeline`'s model; `policy_act`
    serves it from elsewhere, e.g. the controller actor, instead of in process)."""
    if spec is not None and spec.strip().startswith(RL_PREFIX):
        if pipeline is None:
            raise ValueError("an rl: controller needs the loaded pipeline to check the policy against")
        from ecad_ray.var.rl.checkpoint import policy_controller

        path, budget = parse_rl_spec(spec)
        return policy_controller(path, pipeline, budget, policy_act)
    if spec is None or spec.strip() in ("", "none"):
        return NoPruning()
    if spec.strip() == "default":
        return TailPattern()
    return WidthRatios(parse_width_ratios(spec, patch_nums), tuple(patch_nums))


RL_PREFIX = "rl:"


def parse_rl_spec(spec: str, option: str = "--controller") -> tuple[str, float | None]:
    """`rl:D/policy.safetensors@0.4` -> ("D/policy.safetensors", 0.4); no `@`: the policy's budget."""
    body = spec.strip()[len(RL_PREFIX):]
    path, sep, budget = body.rpartition("@")
    if not sep:
        return body, None
    try:
        value = float(budget)
    except ValueError:
        raise UserError(f"{option} {spec}: {budget!r} after '@' is not a FLOPs budget (e.g. @0.4)") from None
    if not 0 < value <= 1:
        raise UserError(f"{option} {spec}: budget {value:g} must be in (0, 1] (a share of the unpruned FLOPs)")
    return path, value


def describe(controller: Controller) -> str:
    """A short name for records: `describe()` when the controller has one, else its class."""
    fn = getattr(controller, "describe", None)
    return fn() if callable(fn) else type(controller).__name__
