"""Batch generation where every item may take its own pruning ratio at each scale.

A learned controller (the RL policy) looks at each image so far and answers one ratio per
item. Items of a batch share one KV cache only while they share a ratio history (a pruned
layer caches fewer keys), so before each scale the batch is split into groups by the ratio
each item gets; each group (`GenerationState.take`) then runs the pipeline's `step` as a batch
of its own. With one ratio for everyone (a fixed pattern, or a policy that never prunes) nothing
is split and the computation is exactly the pipeline's `generate`. Both families run here: a
`VarPipeline` and an `InfinityPipeline` (whose state also splits its text context).

The controller is asked once per scale for the whole batch (one round trip, also when it is a
Ray actor) with an `ItemsView`; it may answer one float (every item) or one float per item.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ecad_ray.var.controllers import Controller, describe
from ecad_ray.var.generation import GenerationState


@dataclass
class ItemsView:
    """What a per-item controller sees before scale `scale_index`, per item of the batch."""

    scale_index: int
    num_scales: int
    patch_nums: tuple[int, ...]
    cond: torch.Tensor  # `GenerationState.pooled_condition`: (B,) class labels or (B, width) prompt rows
    ratios: list[list[float]]  # per item, the ratios of the scales so far
    f_hat_BChw: torch.Tensor  # summed latent so far
    prev_f_hat_BChw: torch.Tensor  # summed latent one scale earlier (zeros before scale 1)


@dataclass
class ItemsResult:
    """Images in [0, 1] (B, 3, H, W) and, per item, the ratio it took at each scale."""

    images_B3HW: torch.Tensor
    item_ratios: list[list[float]]
    controller: str
    transformer_seconds: float  # all groups, all scales (sampling included)
    decode_seconds: float
    controller_seconds: float  # time inside `controller.ratio` (the round trips, for an actor)
    records: tuple = ()  # no per-scale intermediates are kept (groups differ per scale)


def _per_item(answer: Any, batch: int) -> list[float]:
    """A controller's answer as one float per item (a single float applies to all)."""
    if isinstance(answer, (int, float)):
        return [float(answer)] * batch
    ratios = [float(r) for r in answer]
    if len(ratios) != batch:
        raise ValueError(f"controller answered {len(ratios)} ratios for a batch of {batch}")
    return ratios


@torch.inference_mode()
def generate_items(pipe: Any, cond: Any, seeds: list[int], controller: Controller) -> ItemsResult:
    """All scales of a batch (`pipe.conditions(...)` of a `VarPipeline` or `InfinityPipeline`),
    each item at the ratios the controller picks for it."""
    state = pipe.start(cond, list(seeds))
    B, n = state.batch_size, len(pipe.patch_nums)
    pooled = state.pooled_condition()
    groups: list[tuple[list[int], GenerationState]] = [(list(range(B)), state)]
    item_ratios: list[list[float]] = [[] for _ in range(B)]
    prev = torch.zeros_like(groups[0][1].f_hat_BChw)
    step_seconds = ctrl_seconds = 0.0
    for si in range(n):
        f_hat = _assemble([(items, st.f_hat_BChw) for items, st in groups], B)
        view = ItemsView(si, n, pipe.patch_nums, pooled, [list(r) for r in item_ratios], f_hat, prev)
        t0 = time.perf_counter()
        ratios = _per_item(controller.ratio(si, n, view), B)
        ctrl_seconds += time.perf_counter() - t0
        prev = f_hat
        t0 = time.perf_counter()
        next_groups = []
        for items, st in groups:
            by_ratio: dict[float, list[int]] = {}
            for pos, item in enumerate(items):
                by_ratio.setdefault(ratios[item], []).append(pos)
            parts = [(items, st)] if len(by_ratio) == 1 else [([items[p] for p in pos], st.take(pos))
                                                             for pos in by_ratio.values()]
            for part_items, part in parts:
                pipe.step(part, ratios[part_items[0]])
                next_groups.append((part_items, part))
        step_seconds += time.perf_counter() - t0
        groups = next_groups
        for item in range(B):
            item_ratios[item].append(ratios[item])
    t0 = time.perf_counter()
    images = _assemble([(items, pipe.decode(st.f_hat_BChw)) for items, st in groups], B)
    return ItemsResult(images, item_ratios, describe(controller), step_seconds, time.perf_counter() - t0, ctrl_seconds)


def _assemble(parts: list[tuple[list[int], torch.Tensor]], batch: int) -> torch.Tensor:
    """Rows of several groups back in batch order."""
    if len(parts) == 1:
        return parts[0][1]
    first = parts[0][1]
    out = first.new_empty((batch, *first.shape[1:]))
    for items, t in parts:
        out[torch.tensor(items, device=t.device)] = t
    return out
