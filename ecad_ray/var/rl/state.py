"""What the pruning policy sees and may do at a scale: the action set, FLOPs shares, features.

Per item and scale the policy sees (one row of `features`):
  - the scale: one-hot of its index, and index / (scales - 1);
  - compute: FLOPs spent so far and the budget left (shares of the unpruned image's FLOPs), and
    what this scale costs at ratio 0 (early scales are cheap, the last ones dominate);
  - the image so far, from the summed latent (VAR's f_hat, Infinity's summed codes), cheap to
    compute (as SkipVAR's cues): its relative change over the last scale, and the share of its
    energy at high spatial frequencies;
  - the condition: a one-hot class, or the prompt embedding (Infinity: its text encoder's token
    states averaged over the prompt's tokens, `InfinityState.pooled_condition`).

Actions are ratios from a user-settable set (`--actions "0,0.25,0.5,0.75,skip"`; skip = 1).
A mask keeps every item within its FLOPs budget (an action is allowed only if the cheapest
plan for the remaining scales still fits), and scales costing less than `min_scale_share` of
the image always run in full: pruning them saves nothing worth the damage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ecad_ray.errors import UserError

DEFAULT_ACTIONS = "0,0.25,0.5,0.75,skip"
NUM_SCALAR_FEATURES = 6  # progress, spent, budget left, scale cost, latent change, high-freq share


def parse_actions(text: str, option: str = "--actions") -> tuple[float, ...]:
    """`"0,0.25,0.5,skip"` -> (0.0, 0.25, 0.5, 1.0): ratios in [0, 1) plus `skip` (or 1)."""
    out: list[float] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "skip":
            value = 1.0
        else:
            try:
                value = float(part)
            except ValueError:
                raise UserError(f"{option} {text!r}: {part!r} is neither a ratio in [0, 1) nor 'skip'") from None
            if not 0 <= value <= 1:
                raise UserError(f"{option} {text!r}: {part!r} is outside [0, 1) (use 'skip' to skip a scale)")
        if value in out:
            raise UserError(f"{option} {text!r}: {part!r} is listed twice")
        out.append(value)
    if len(out) < 2:
        raise UserError(f"{option} {text!r}: give at least two actions, e.g. {DEFAULT_ACTIONS}")
    if 0.0 not in out:
        raise UserError(f"{option} {text!r}: must include 0 (the full scale: cheap scales always run it)")
    return tuple(sorted(out))


def check_budget(budget: float, option: str = "--flops-budget") -> float:
    """A FLOPs budget is a share of the unpruned image's FLOPs, in (0, 1]."""
    if not 0 < budget <= 1:
        raise UserError(f"{option} {budget:g}: must be in (0, 1] (a share of the unpruned FLOPs, e.g. 0.4)")
    return float(budget)


@dataclass(frozen=True)
class ModelFacts:
    """The facts of a VAR-family model (VAR or Infinity) that the features and FLOPs shares
    depend on, read from a configured pipeline (its layer range and sampling as they are)."""

    patch_nums: tuple[int, ...]
    cond: str  # "class" | "text"
    cond_dim: int  # classes, or the width of the prompt's condition row (`pipe.condition_width`)
    layer_range: tuple[int, int]
    name: str  # the model config's name (for messages)
    fingerprint: str  # the model config's `fingerprint()`: the identity a policy is bound to
    scale_flops: Callable[[list[float]], list[float]] = field(compare=False, repr=False)  # `pipe.flops`
    _flops_cache: dict = field(default_factory=dict, compare=False, repr=False)  # ratios -> FLOPs per scale

    @classmethod
    def of(cls, pipe) -> "ModelFacts":
        """Facts of a loaded `VarPipeline` or `InfinityPipeline`; FLOPs come from the model's own
        formula (`pipe.flops`)."""
        return cls(tuple(pipe.patch_nums), "text" if pipe.text_conditional else "class", pipe.condition_width,
                   tuple(pipe.layer_range), pipe.config.name, pipe.config.fingerprint(), pipe.flops)

    def flops(self, ratios: list[float]) -> list[float]:
        """FLOPs per scale of one image with these ratios (the first len(ratios) scales).

        Cached: the masks ask for the same few plans for every item at every scale, and the
        formula's Python loop would otherwise be most of a small model's controller time."""
        key = tuple(ratios)
        if key not in self._flops_cache:
            full = list(ratios) + [0.0] * (len(self.patch_nums) - len(ratios))
            self._flops_cache[key] = list(self.scale_flops(full))[: len(ratios)]
        return self._flops_cache[key]

    @property
    def unpruned_flops(self) -> float:
        """FLOPs of the unpruned image."""
        return sum(self.flops((0.0,) * len(self.patch_nums)))

    def feature_dim(self) -> int:
        """Width of a feature row."""
        return len(self.patch_nums) + NUM_SCALAR_FEATURES + self.cond_dim


def flops_share(facts: ModelFacts, ratios: list[float]) -> float:
    """FLOPs of an image with these per-scale ratios, as a share of the unpruned image's."""
    return sum(facts.flops(ratios)) / facts.unpruned_flops


def action_mask(facts: ModelFacts, history: list[float], actions: tuple[float, ...], budget: float,
                min_scale_share: float) -> tuple[list[bool], float, float]:
    """(allowed per action, FLOPs share spent so far, this scale's share at ratio 0) for one item."""
    total = facts.unpruned_flops
    si, n = len(history), len(facts.patch_nums)
    spent = sum(facts.flops(history)) / total
    full_cost = facts.flops(history + [0.0])[si] / total
    if full_cost < min_scale_share:
        return [a == 0.0 for a in actions], spent, full_cost
    cheapest = max(actions)
    allowed = []
    for a in actions:
        plan = history + [a] + [cheapest] * (n - si - 1)
        allowed.append(sum(facts.flops(plan)) / total <= budget + 1e-9)
    if not any(allowed):  # no plan fits (an action set without skip): take the cheapest one
        allowed = [a == cheapest for a in actions]
    return allowed, spent, full_cost


def latent_cues(f_hat_BChw: torch.Tensor, prev_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relative change over the last scale, high-frequency energy share) per item, each (B,)."""
    B = f_hat_BChw.shape[0]
    f = f_hat_BChw.float()
    norm = f.flatten(1).norm(dim=1)
    change = (f - prev_BChw.float()).flatten(1).norm(dim=1) / norm.clamp_min(1e-8)
    change = torch.where(norm > 0, change, torch.zeros_like(change))
    power = torch.fft.fft2(f).abs().pow(2).sum(dim=1)  # (B, h, w)
    h, w = power.shape[-2:]
    fy = torch.fft.fftfreq(h, device=f.device).abs().view(-1, 1)
    fx = torch.fft.fftfreq(w, device=f.device).abs().view(1, -1)
    high = ((fy > 0.25) | (fx > 0.25)).expand(h, w)
    total = power.flatten(1).sum(dim=1)
    share = power[:, high].sum(dim=1) / total.clamp_min(1e-12)
    return change.view(B), torch.where(total > 0, share, torch.zeros_like(share)).view(B)


def condition_features(facts: ModelFacts, cond: torch.Tensor) -> torch.Tensor:
    """(B, cond_dim): one-hot class, or the prompt embedding itself."""
    if facts.cond == "class":
        return torch.nn.functional.one_hot(cond.long().cpu(), facts.cond_dim).float()
    return cond.float().cpu()


def masks(facts: ModelFacts, view, actions: tuple[float, ...], budget: float,
          min_scale_share: float) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """(allowed-action mask (B, A), per item (FLOPs share spent, this scale's share)) before its scale."""
    if tuple(view.patch_nums) != facts.patch_nums:
        raise ValueError(f"policy made for scales {facts.patch_nums}, model has {tuple(view.patch_nums)}")
    rows, costs = [], []
    seen: dict[tuple[float, ...], tuple[list[bool], float, float]] = {}  # items mostly share a history
    for history in view.ratios:
        key = tuple(history)
        if key not in seen:
            seen[key] = action_mask(facts, history, actions, budget, min_scale_share)
        allowed, spent, full_cost = seen[key]
        rows.append(allowed)
        costs.append((spent, full_cost))
    return torch.tensor(rows, dtype=torch.bool), costs


def features(facts: ModelFacts, view, budget: float, costs: list[tuple[float, float]]) -> torch.Tensor:
    """Feature rows (B, F) for an `ItemsView` before its scale; `costs` from `masks`."""
    n, si = view.num_scales, view.scale_index
    change, high = latent_cues(view.f_hat_BChw, view.prev_f_hat_BChw)
    onehot = torch.zeros(len(costs), n)
    onehot[:, si] = 1.0
    spent = torch.tensor([c[0] for c in costs])
    full_cost = torch.tensor([c[1] for c in costs])
    scalars = torch.stack((torch.full_like(spent, si / max(n - 1, 1)), spent, budget - spent, full_cost,
                           change.float().cpu(), high.float().cpu()), dim=1)
    return torch.cat((onehot, scalars, condition_features(facts, view.cond)), dim=1)
