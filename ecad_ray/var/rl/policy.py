"""The pruning policy (a small MLP over `state.features`) and the controller that serves it.

`PolicyController` implements the `Controller` protocol per item: before each scale it builds
the feature rows and action masks of the whole batch, asks `act` (in process, or through the
controller actor in `actors.controller`) and returns one ratio per item. Deterministic by
default (the most likely allowed action), so an image depends only on the model, condition,
seed and policy; training samples instead and records each decision for the learner.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from ecad_ray.errors import UserError
from ecad_ray.var.rl.state import NUM_SCALAR_FEATURES, ModelFacts, features, masks


@dataclass(frozen=True)
class PolicyConfig:
    """What a policy was made for and how it acts (stored beside its weights)."""

    model: str  # the --model it was trained on (for messages)
    fingerprint: str  # that model config's `fingerprint()` (VAR or Infinity): the policy only fits a model with it
    patch_nums: tuple[int, ...]
    cond: str
    cond_dim: int
    actions: tuple[float, ...]
    budgets: tuple[float, ...] = (1.0,)  # training budgets; the first is the default at generate time
    min_scale_share: float = 0.05
    hidden: int = 64

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PolicyConfig":
        """Inverse of `to_dict`."""
        d = dict(data)
        for k in ("patch_nums", "actions", "budgets"):
            d[k] = tuple(d[k])
        return cls(**d)

    def check_model(self, facts: ModelFacts, source: str) -> None:
        """A policy only fits the model it was trained for (same config fingerprint)."""
        if facts.fingerprint == self.fingerprint:
            return
        if tuple(facts.patch_nums) != tuple(self.patch_nums):
            detail = (f"trained for scales {','.join(map(str, self.patch_nums))}, "
                      f"this model has {','.join(map(str, facts.patch_nums))}")
        elif (facts.cond, facts.cond_dim) != (self.cond, self.cond_dim):
            detail = (f"trained for a {self.cond} model ({self.cond_dim} wide), "
                      f"this model is {facts.cond} ({facts.cond_dim} wide)")
        else:
            detail = "same scales, another tokenizer, transformer or sampling"
        raise UserError(f"{source}: policy was trained for model {self.model} (config {self.fingerprint}), "
                        f"not {facts.name} (config {facts.fingerprint}): {detail}; "
                        f"train one with `ecad-ray var rl train --model ...`")


class Policy(nn.Module):
    """Feature row -> logits over the action set (two tanh layers: the features are few)."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        in_dim = len(config.patch_nums) + NUM_SCALAR_FEATURES + config.cond_dim
        self.net = nn.Sequential(nn.Linear(in_dim, config.hidden), nn.Tanh(),
                                 nn.Linear(config.hidden, config.hidden), nn.Tanh(),
                                 nn.Linear(config.hidden, len(config.actions)))
        nn.init.zeros_(self.net[-1].weight)  # start uniform over the allowed actions
        nn.init.zeros_(self.net[-1].bias)

    def distribution(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.distributions.Categorical:
        """Categorical over allowed actions only."""
        logits = self.net(feats).masked_fill(~mask, float("-inf"))
        return torch.distributions.Categorical(logits=logits)

    @torch.no_grad()
    def act(self, feats: torch.Tensor, mask: torch.Tensor, sample: bool = False,
            generator: torch.Generator | None = None) -> list[int]:
        """Action index per row: the most likely allowed one, or a sample."""
        dist = self.distribution(feats, mask)
        if not sample:
            return dist.probs.argmax(dim=1).tolist()
        return torch.multinomial(dist.probs, 1, generator=generator).view(-1).tolist()


@dataclass
class Decision:
    """One scale's decisions for a batch, as the learner needs them."""

    features: torch.Tensor  # (B, F)
    mask: torch.Tensor  # (B, A)
    actions: list[int]


@dataclass
class PolicyController:
    """`Controller` that asks a policy for one ratio per item before every scale.

    `act` is the policy's `act` (local) or a function that calls the controller actor; the
    features are built here, in the generator, so only a few numbers per item travel."""

    config: PolicyConfig
    facts: ModelFacts
    act: Callable[[torch.Tensor, torch.Tensor], list[int]]
    budget: float | None = None  # None: the policy's default budget
    name: str = "rl"
    decisions: list[Decision] | None = None  # set to [] to record (training)
    per_item: bool = True
    _budget: float = field(init=False, default=1.0)

    def __post_init__(self) -> None:
        self._budget = self.config.budgets[0] if self.budget is None else self.budget

    def ratio(self, scale_index: int, num_scales: int, state) -> list[float]:
        """One ratio per item of the batch in `state` (an `ItemsView`).

        When the mask leaves every item a single action (cheap early scales, or a spent budget)
        the policy is not asked: there is nothing to choose, no round trip to pay, and a forced
        action carries no gradient, so nothing is recorded for the learner either."""
        mask, costs = masks(self.facts, state, self.config.actions, self._budget, self.config.min_scale_share)
        if bool((mask.sum(dim=1) == 1).all()):
            return [self.config.actions[int(i)] for i in mask.float().argmax(dim=1)]
        feats = features(self.facts, state, self._budget, costs)
        picked = self.act(feats, mask)
        if self.decisions is not None:
            self.decisions.append(Decision(feats, mask, list(picked)))
        return [self.config.actions[a] for a in picked]

    def describe(self) -> str:
        """Name recorded in configs: the policy file and the budget it ran under."""
        return f"{self.name}@{self._budget:g}"
